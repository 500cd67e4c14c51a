"""The shared training loop (Lightning Fabric underneath) and YAML dataclass configs."""

from medistill.train.config import (
    apply_overrides,
    from_dict,
    load_config,
    read_yaml,
    save_config,
    to_dict,
)
from medistill.train.distributed import is_main_process, rank, world_size
from medistill.train.loop import (
    LoopConfig,
    StepContext,
    Trainer,
    TrainTask,
    checkpoint_contents,
    choose_cpu_speedups,
    export_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "LoopConfig",
    "StepContext",
    "TrainTask",
    "Trainer",
    "apply_overrides",
    "checkpoint_contents",
    "choose_cpu_speedups",
    "export_checkpoint",
    "from_dict",
    "is_main_process",
    "load_checkpoint",
    "load_config",
    "rank",
    "read_yaml",
    "save_checkpoint",
    "save_config",
    "to_dict",
    "world_size",
]
