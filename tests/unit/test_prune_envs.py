"""scripts/prune_envs.sh: a new environment's build removes the cached ones for other pins, but
never one a running process has mapped files from (a checkout's server still running on it)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRUNE = REPO / "scripts" / "prune_envs.sh"

# maps a file of the environment as a process that imported a compiled module from it would
HOLD = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
print("mapped", flush=True)
sys.stdin.read()
"""


def _env(cache: Path, name: str) -> Path:
    env = cache / name
    (env / "lib").mkdir(parents=True)
    (env / "lib" / "module.so").write_bytes(b"\0" * 4096)
    return env


def _prune(cache: Path, keep: Path) -> str:
    done = subprocess.run(["bash", str(PRUNE), str(cache), str(keep)], capture_output=True, text=True, check=True)
    return done.stdout


def test_keeps_the_new_and_the_used_environments_and_removes_the_rest(tmp_path):
    new, used, unused = _env(tmp_path, "env-new"), _env(tmp_path, "env-used"), _env(tmp_path, "env-unused")
    sibling = _env(tmp_path, "env-usedtoo")  # its name starts with the used one's: not mistaken for it
    (tmp_path / "wheels").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(used / "lib" / "module.so")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mapped"
        said = _prune(tmp_path, new)
        assert new.is_dir() and used.is_dir() and (tmp_path / "wheels").is_dir()
        assert not unused.exists() and not sibling.exists()
        assert f"keeping {used}" in said
    finally:
        holder.communicate("")
    _prune(tmp_path, new)  # its process has ended: now it goes too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env-new", "wheels"]


def test_an_empty_cache_is_fine(tmp_path):
    keep = tmp_path / "env-new"
    assert _prune(tmp_path, keep) == ""
