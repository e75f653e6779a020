from torchvision._absent import names

__getattr__ = names("torchvision.transforms.v2.functional")
