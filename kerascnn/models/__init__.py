"""The network families. Importing this package registers every network of the zoo."""

from . import alexnet, googlenet, lenet, resnet, vgg  # noqa: F401
