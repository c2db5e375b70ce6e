"""The course notebooks: each jupytext source (notebooks/<name>.py) and its committed, executed
copy (notebooks/<name>.ipynb) hold the same cells; the copy was executed and names no path of
a machine; and every notebook runs at smoke scale (CONVJAX_NOTEBOOK_SMOKE=1).

The three smoke runs start together, each in its own kernel, and each test waits for its
own: most of a smoke run is XLA compiling on one core, so on a 2-core machine they overlap
(55 s together at load average 3-5 here; one after the other they would need at least their
70 s of CPU time).
"""

from concurrent.futures import ThreadPoolExecutor

import jupytext
import nbformat
import pytest

from notebooks.execute import NAMES, NOTEBOOKS, machine_paths, run

SMOKE_CELL_TIMEOUT = 600  # seconds; a smoke cell takes a few


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_holds_the_cells_of_its_source(name):
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    executed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert cells(executed) == cells(source), (
        f"notebooks/{name}.ipynb is out of date with {name}.py: rerun "
        f"`python -m notebooks.execute {name}` (full scale) and commit both")


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_was_executed_and_names_no_machine_path(name):
    executed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{name}.ipynb has unexecuted cells"
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert machine_paths(executed) == []


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """Starts every selected notebook at smoke scale; {name: future of the executed notebook}."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.originalname == "test_notebook_runs_at_smoke_scale"]
    root = tmp_path_factory.mktemp("notebooks")
    with ThreadPoolExecutor(max(len(selected), 1)) as pool:
        yield {name: pool.submit(run, name, True, str(root), SMOKE_CELL_TIMEOUT)
               for name in selected}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_smoke_scale(name, smoke_runs):
    notebook = smoke_runs[name].result()  # a failing cell raises CellExecutionError here
    assert machine_paths(notebook) == []
    last = notebook.cells[-1].outputs[0].text
    assert "at smoke scale" in last
