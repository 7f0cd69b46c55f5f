"""Model zoo: `build_model(name, num_classes, in_channels)`; each model names its CAM layer.

| name            | architecture                                   | cam_layer  |
|-----------------|------------------------------------------------|------------|
| resnet18        | CIFAR ResNet-18 (Madry/TRADES), 11,173,962 p.  | layer4     |
| preact_resnet18 | PreAct ResNet-18 with final BN-ReLU            | final_act  |
| wrn34_10        | WideResNet-34-10 (TRADES/MART), 46,160,474 p.  | block3     |
| cnn_small       | conv32-pool-conv64-pool-conv128, ~94k params   | block3     |
| cnn_small_gn    | cnn_small with GroupNorm: no batch statistics  | block3     |

Parameter counts are for 10 classes and 3 input channels. Inputs are unnormalised images in
[0, 1]; any spatial size of at least 28 works thanks to adaptive average pooling. The modules:
`resnet` (ResNet-18), `preact_resnet`, `wideresnet` and `cnn` (the small CNNs).

Beside the architectures: `registry` (names to factories, and the checks every model passes),
`checkpoint` (safetensors checkpoints with metadata: `save_checkpoint`, `load_checkpoint`,
`read_metadata`) and `eval_mode` (the one way to run a model in eval mode for a while).
"""

from part.models import cnn, preact_resnet, resnet, wideresnet  # noqa: F401 (registers models)
from part.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from part.models.registry import MODELS, ModelError, ModelSpec, build_model, list_models

__all__ = ["MODELS", "ModelError", "ModelSpec", "build_model", "list_models", "load_checkpoint",
           "read_metadata", "save_checkpoint"]
