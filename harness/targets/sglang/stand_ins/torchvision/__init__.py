from torchvision._absent import __version__ as __version__
from torchvision._absent import names

__getattr__ = names("torchvision")
