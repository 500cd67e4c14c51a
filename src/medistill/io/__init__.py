"""Image I/O with world-space geometry: readers, NIfTI writer, reorientation, working grids."""

from medistill.io.atomic import atomic_path
from medistill.io.geometry import Grid
from medistill.io.grid import (
    WorkingGrid,
    check_same_grid,
    content_box,
    content_threshold,
    grid_mismatch_mm,
    resample_array,
    to_working_grid,
)
from medistill.io.image import Image
from medistill.io.intensity import ct_window, normalize_percentile
from medistill.io.orientation import Reorientation, from_canonical, to_canonical
from medistill.io.readers import list_h5_scans, load, read_h5_scan
from medistill.io.writers import save, save_nifti

__all__ = [
    "Grid",
    "Image",
    "Reorientation",
    "WorkingGrid",
    "atomic_path",
    "check_same_grid",
    "content_box",
    "content_threshold",
    "ct_window",
    "from_canonical",
    "grid_mismatch_mm",
    "list_h5_scans",
    "load",
    "normalize_percentile",
    "read_h5_scan",
    "resample_array",
    "save",
    "save_nifti",
    "to_canonical",
    "to_working_grid",
]
