"""Small seeded SPAN models that several test modules build the same way."""

import torch

from spanlib import SPAN, Bernoulli, BernoulliEmbedding, EinsumNetwork, random_binary_trees

TINY_ENCODER = dict(depth=1, heads=2, d_model=8, d_ff=16)


def tiny_span(num_vars=6, leaf=None, embedding=None, **settings):
    """Build a float32 SPAN over random binary trees (depth 2, 2 replicas, K=3), seeded with 0.

    The leaf defaults to Bernoulli and the embedding to BernoulliEmbedding. `settings` override
    the tiny encoder (TINY_ENCODER) or set other SPAN arguments.
    """
    torch.manual_seed(0)
    net = EinsumNetwork(random_binary_trees(num_vars, 2, 2, seed=0), leaf or Bernoulli(), K=3)
    return SPAN(net, embedding or BernoulliEmbedding(), **{**TINY_ENCODER, **settings})
