"""ember.nn.modules: every layer class in one namespace (torch.nn.modules)."""
from .module import Module
from .linear import Identity, Linear, Bilinear
from .conv import Conv1d, Conv2d
from .conv_transpose import ConvTranspose1d, ConvTranspose2d
from .upsampling import Upsample, UpsamplingNearest2d, UpsamplingBilinear2d, PixelShuffle, PixelUnshuffle
from .pooling import (AvgPool1d, AvgPool2d, AvgPool3d, AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d,
                      MaxPool1d, MaxPool2d, MaxPool3d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d,
                      MaxUnpool1d, MaxUnpool2d, MaxUnpool3d, LPPool1d, LPPool2d, LPPool3d)
from .conv3d import Conv3d, ConvTranspose3d
from .activation import (ReLU, ReLU6, LeakyReLU, ELU, CELU, SELU, GELU, SiLU, Mish, Sigmoid, Tanh, Softplus,
                         Softsign, LogSigmoid, Hardtanh, Hardswish, Hardsigmoid, Threshold, PReLU, Softmax,
                         LogSoftmax, Softmin, GLU)
from .normalization import (BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
                            LayerNorm, GroupNorm, RMSNorm)
from .dropout import Dropout, Dropout1d, Dropout2d, Dropout3d, AlphaDropout
from .activation_more import (Hardshrink, Softshrink, Tanhshrink, RReLU, Softmax2d, ChannelShuffle, LocalResponseNorm,
                              FeatureAlphaDropout)
from .container import Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict
from .flatten import Flatten, Unflatten
from .padding import (ZeroPad1d, ZeroPad2d, ZeroPad3d, ConstantPad1d, ConstantPad2d, ConstantPad3d, ReflectionPad1d,
                      ReflectionPad2d, ReflectionPad3d, ReplicationPad1d, ReplicationPad2d, ReplicationPad3d,
                      CircularPad1d, CircularPad2d, CircularPad3d)
from .fold import Fold, Unfold
from .embedding import Embedding, EmbeddingBag
from .recurrent import RNNBase, RNN, LSTM, GRU, RNNCellBase, RNNCell, LSTMCell, GRUCell
from .transformer import (MultiheadAttention, TransformerEncoderLayer, TransformerEncoder, TransformerDecoderLayer,
                          TransformerDecoder, Transformer)
from .loss import (MSELoss, L1Loss, SmoothL1Loss, HuberLoss, CrossEntropyLoss, NLLLoss, BCELoss,
                   BCEWithLogitsLoss, KLDivLoss, SoftMarginLoss)
from .loss_more import (CosineEmbeddingLoss, HingeEmbeddingLoss, MarginRankingLoss, MultiMarginLoss,
                        MultiLabelMarginLoss, MultiLabelSoftMarginLoss, PoissonNLLLoss, GaussianNLLLoss,
                        TripletMarginLoss, TripletMarginWithDistanceLoss, CosineSimilarity, PairwiseDistance)

__all__ = [name for name in dir() if not name.startswith("_")]
