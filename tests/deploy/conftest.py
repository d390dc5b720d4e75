"""The deploy tests build checkpoints with the CLI tests' builders and the model tests' peer layouts."""
import sys
from pathlib import Path

for folder in ("cli", "model"):
    path = str(Path(__file__).resolve().parents[1] / folder)
    if path not in sys.path:
        sys.path.append(path)
