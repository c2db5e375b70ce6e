"""Flax models: the course CNN and its layers, a Keras-style summary, pretrained backbones."""

from convjax.models.cnn import CNN
from convjax.models.summary import count_params, layer_table, summary

__all__ = ["CNN", "count_params", "layer_table", "summary"]
