"""The virtual-world generator behind ``stefaland data synth``.

It writes a synthetic but physically coherent land-surface world in the real CAMELS-US file
formats (forcings, USGS streamflow, attribute tables) plus an intake catalog, so that the whole
pipeline (build → pretrain → finetune → evaluate on held-out sites and regions) runs anywhere
without downloads, at any scale up to the full 4,229-basin set.
"""

from .world import write_virtual_world

__all__ = ["write_virtual_world"]
