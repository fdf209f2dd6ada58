"""The StefaLand encoder and the masked-reconstruction model that pretrains it."""

from .config import ModelConfig
from .decoder import ReconstructionDecoder
from .embedding import VariableEmbedding
from .encoder import EncoderOutput, StefaLandEncoder
from .heads import VariableHeads
from .reconstruction import MaskedReconstructionModel, Reconstruction

__all__ = [
    "EncoderOutput", "MaskedReconstructionModel", "ModelConfig", "Reconstruction",
    "ReconstructionDecoder", "StefaLandEncoder", "VariableEmbedding", "VariableHeads",
]
