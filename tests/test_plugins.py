"""Plugin discovery with real throwaway distributions on sys.path (no mocks of importlib)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import npgrad
from npgrad import plugins
from npgrad.errors import PluginWarning


def make_distribution(
    root: Path, dist: str, entries: dict[str, str], modules: dict[str, str]
) -> None:
    """Write an installed distribution: modules plus a *.dist-info with entry_points.txt."""
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[npgrad.plugins]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("NPGRAD_DISABLE_PLUGINS", raising=False)
    yield tmp_path
    for name in [n for n in list(plugins._loaded) if n.startswith("fake")]:
        del plugins._loaded[name]
    plugins._failed.clear()


def test_plugins_load_once_and_a_broken_one_stops_nothing(site: Path) -> None:
    make_distribution(
        site,
        "fake_good",
        {"fakegood": "fake_good_ops"},
        {
            "fake_good_ops": """
                import npgrad
                LOADS = globals().get("LOADS", 0) + 1

                @npgrad.op("fakegood::double")
                def double(x):
                    return 2 * x
            """
        },
    )
    make_distribution(
        site,
        "fake_bad",
        {"fakebad": "fake_bad_ops"},
        {"fake_bad_ops": "raise ImportError('needs a library that is not installed')\n"},
    )
    with pytest.warns(
        PluginWarning,
        match=r'npgrad: plugin "fakebad" \(fake_bad_ops\) failed to load: ImportError: needs a '
        r"library that is not installed; its ops are unavailable, the other plugins still load",
    ):
        loaded = npgrad.load_plugins()
    assert "fakegood" in loaded
    assert "fakebad" not in loaded
    assert "scipy" in loaded
    assert plugins.plugin_of(npgrad.get("fakegood::double").__module__) == "fakegood"
    module = sys.modules["fake_good_ops"]
    with pytest.warns(PluginWarning):  # the broken one is tried again, the good one is not
        assert "fakegood" in npgrad.load_plugins()
    assert module.LOADS == 1


def test_discovery_can_be_turned_off(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(
        site,
        "fake_off",
        {"fakeoff": "fake_off_ops"},
        {"fake_off_ops": "raise RuntimeError('must not be imported')\n"},
    )
    monkeypatch.setenv("NPGRAD_DISABLE_PLUGINS", "1")
    assert "fakeoff" not in npgrad.load_plugins()
    assert "fake_off_ops" not in sys.modules


@pytest.mark.slow
def test_importing_npgrad_loads_no_plugin_and_no_scipy() -> None:
    code = (
        "import sys, npgrad\n"
        "assert 'npgrad_scipy' not in sys.modules, 'plugin imported'\n"
        "assert 'scipy' not in sys.modules, 'scipy imported'\n"
        "assert 'threadpoolctl' not in sys.modules, 'threadpoolctl imported'\n"
        "print(npgrad.ops())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_plugin_taking_a_registered_name_is_reported_and_stops_nothing(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from npgrad.cli import main

    make_distribution(
        site,
        "fake_clash",
        {"fakeclash": "fake_clash_ops"},
        {
            "fake_clash_ops": """
                import npgrad

                @npgrad.op("scipy::conv2d")
                def conv2d(x):
                    return x
            """
        },
    )
    assert main(["check", "scipy::scipy_conv2d"]) == 1
    captured = capsys.readouterr()
    assert "plugin 'fakeclash' failed to load (fake_clash_ops: DefinitionError" in captured.err
    assert 'npgrad op "scipy::conv2d": the name is already registered' in captured.err
    assert "1 passed, 0 failed" in captured.out
    assert "1 plugin(s) failed to load: fakeclash" in captured.out
