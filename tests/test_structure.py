"""The seams of the data path: one home for label spaces and file names, one image decoder, one folder
writer, one table printer, and library notebooks numbered in import order. Read from the generated modules."""
import ast
import re
from pathlib import Path

import cxr_nb
from cxr_nb import labels

PKG = Path(cxr_nb.__file__).parent
# modules by dotted name below cxr_nb ("zoo", "explain.cams"); notebooks by name without number ("zoo", "explain_cams")
MODULES = {".".join(p.relative_to(PKG).with_suffix("").parts): p.read_text(encoding="utf-8")
           for p in PKG.rglob("*.py") if not p.stem.startswith("_")}
NOTEBOOKS = {re.sub(r"^\d+_", "", p.stem): int(p.name[:2]) for p in (PKG.parent/"nbs").glob("[0-9][0-9]_*.ipynb")}


def literals(src: str) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def string_sequences(src: str) -> list[set[str]]:
    "The string items of every list, tuple or set literal in `src` (dict keys, e.g. a table of reported counts, are not a label list)."
    return [{e.value for e in n.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.List, ast.Tuple, ast.Set))]


def test_label_file_names_and_label_lists_live_only_in_labels():
    names = [labels.PADCHEST_CSV, labels.NIH_CSV, labels.NIH_BBOX_CSV, labels.NIH_CSV_2017, *labels.SHIPPED_CSV.values()]
    spaces = [labels.CHEXPERT_LABELS, labels.NIH_LABELS, labels.PADCHEST_LABELS, list(labels.SYNTH_FINDINGS)]
    for module, src in MODULES.items():
        if module == "labels": continue
        lits = literals(src)
        assert not lits & set(names), f"{module} spells out a label file name: {lits & set(names)}"
        for seq in string_sequences(src):   # a label list written again (a few findings named together are fine)
            for space in spaces:
                assert len(seq & set(space)) < len(space) // 2, f"{module} holds a copy of a label list: {sorted(seq & set(space))}"


def test_one_decoder_one_folder_writer_one_table_printer():
    readers = [m for m, src in MODULES.items() if "cv2.imread(" in src and m != "bench"]   # bench times cv2.imread on purpose
    assert readers == ["preprocess"], readers
    assert len(re.findall(r"cv2\.imread\(", MODULES["preprocess"])) == 1
    assert [m for m, src in MODULES.items() if "def format_table" in src] == ["core"]
    assert [m for m, src in MODULES.items() if re.search(r"\.(partial|tmp)-", src)] == ["core"]
    assert [m for m, src in MODULES.items() if "mkdtemp(" in src] == ["core"]   # RunFolder's fallback only


def imported_modules(module: str, src: str) -> set[str]:
    "The cxr_nb modules `src` imports, absolute (cxr_nb.x.y) or relative (.y, ..x), as dotted names below cxr_nb."
    package = module.split(".")[:-1]
    found = set()
    for dots, name in re.findall(r"^\s*from (?:cxr_nb\.|(\.+))([\w.]+) import", src, re.M):
        base = package[:len(package) - (len(dots) - 1)] if dots else []
        found.add(".".join([*base, name]))
    return found & set(MODULES)


def test_library_notebooks_are_numbered_in_import_order():
    number = {module: NOTEBOOKS[module.replace(".", "_")] for module in MODULES}
    assert set(NOTEBOOKS) == {m.replace(".", "_") for m in MODULES}, (sorted(NOTEBOOKS), sorted(MODULES))
    assert imported_modules("explain.cases", "from ..models import a\nfrom .cams import b") == {"models", "explain.cams"}
    for module, src in MODULES.items():
        for imported in imported_modules(module, src):
            assert number[imported] < number[module], f"{module} ({number[module]:02d}) imports {imported} ({number[imported]:02d})"


def test_no_blanket_warning_filters():
    for module, src in MODULES.items():
        assert 'simplefilter("ignore")' not in src, f"{module} silences every warning"
