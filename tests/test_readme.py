"""The README's quick start stays what CI runs, and the main command works."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick_start():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    commands = _quick_start()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands)
    test_cmd = commands[1].split("&& pip install", 1)[1]
    assert ("pip install" + test_cmd) in (ROOT / ".ci" / "run").read_text()


def test_main_command_runs(tmp_path):
    main_cmd = _quick_start()[0].split("&& python ", 1)[1]
    args = main_cmd.split()[1:]
    assert args[0] == "--config=configs/default.py"
    out = subprocess.run([sys.executable, "main.py", *args[:1], f"--workdir={tmp_path}",
                          "--config.train.batch_size=2", "--config.train.unroll=8"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    loss = float(re.search(r"loss ([0-9.]+) nats", out.stdout).group(1))
    assert 4.5 < loss < 6.5  # about ln 256 at initialisation
