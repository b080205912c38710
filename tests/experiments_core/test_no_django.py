import subprocess
import sys


def test_the_core_imports_without_django():
    code = (
        "import sys, experiments.core.protocols, experiments.core.metrics, experiments.core.datasets, "
        "experiments.core.imageops; bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
