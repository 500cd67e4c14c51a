"""Former home of several commands; each now lives in its own module (``cli/<command>.py``).

Kept so that ``from medistill.cli import registration`` goes on working.
"""

from __future__ import annotations

from medistill.cli.bench import bench
from medistill.cli.demo import demo
from medistill.cli.evaluate import evaluate
from medistill.cli.models import models
from medistill.cli.register import register
from medistill.cli.train import ROLE_HELP, train

__all__ = ["ROLE_HELP", "bench", "demo", "evaluate", "models", "register", "train"]
