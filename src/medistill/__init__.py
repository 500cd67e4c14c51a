"""medistill: knowledge distillation for medical-imaging networks that run fast on a CPU.

Sub-packages (one direction of flow): ``io`` -> ``spatial`` -> ``data`` -> ``nets`` -> ``losses`` /
``metrics`` -> ``train`` -> tasks (``registration``) -> ``cli``.
"""

__version__ = "0.1.0"
