"""The Einsum network: a tensorised probabilistic circuit over a region graph.

`EinsumNetwork(graph, leaf, K)` stacks a factorised leaf layer, one einsum layer per height of the
region graph and a mixing layer wherever a region has several partitions. The root vector has a
single entry, so `net(x)` is log p(x). Conventions: x is (batch, num_vars) or (batch, num_vars,
num_dims); masks are True where a variable is missing (marginalised or to be filled in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .graph import RegionGraph
from .inputs import check_input
from .layers import EinsumLayer, MixingLayer
from .leaves import LeafFamily, LeafLayer, leaf_from_config

CHECKPOINT_FORMAT = "spanlib.EinsumNetwork/1"


@dataclass
class Trace:
    """Values stored by a forward pass for the top-down pass of sampling and MPE.

    Lists hold one entry per einsum layer: child values (batch, P, K), einsum outputs
    (batch, P, out) and the log weights used (P, out, K, K) or (batch, P, out, K, K).
    """

    leaves: torch.Tensor
    left: list[torch.Tensor]
    right: list[torch.Tensor]
    einsum: list[torch.Tensor]
    log_weights: list[torch.Tensor]
    mixing_log_weights: list[torch.Tensor | None]


class EinsumNetwork(nn.Module):
    """An Einsum network over a region graph.

    Args:
        graph: a `RegionGraph`, e.g. `random_binary_trees(num_vars, depth, replicas, seed=0)` or
            `poon_domingos(height, width, steps)`.
        leaf: the leaf family: `Bernoulli()`, `Categorical(num_values)`, `Normal(min_var, max_var)`
            or `Binomial(num_trials)`.
        K: densities per leaf region and sums per internal region.
        num_dims: dims of each variable (3 for an RGB pixel treated as one variable).
    """

    def __init__(self, graph: RegionGraph, leaf: LeafFamily, K: int, num_dims: int = 1):
        super().__init__()
        if K < 1:
            raise ValueError(f"K must be at least 1, got {K}")
        if num_dims < 1:
            raise ValueError(f"num_dims must be at least 1, got {num_dims}")
        self.graph, self.leaf_family, self.K, self.num_dims = graph, leaf, K, num_dims
        self.num_vars = graph.num_vars

        self.leaf = LeafLayer(leaf, torch.as_tensor(graph.leaf_index()), graph.num_vars, K, num_dims)
        plans = graph.layers()
        self.einsum_layers = nn.ModuleList()
        self.mixing_layers = nn.ModuleList()
        self._slot_offsets = [0, self.leaf.index.shape[0]]
        for depth, plan in enumerate(plans):
            out_size = 1 if depth == len(plans) - 1 else K
            layer = EinsumLayer(
                len(plan.partitions), K, out_size, torch.as_tensor(plan.left_slots), torch.as_tensor(plan.right_slots)
            )
            self.einsum_layers.append(layer)
            mixing = None if plan.mixing is None else MixingLayer(torch.as_tensor(plan.mixing), out_size)
            self.mixing_layers.append(mixing if mixing is not None else nn.Identity())
            self._slot_offsets.append(self._slot_offsets[-1] + len(plan.regions))
        self._has_mixing = [plan.mixing is not None for plan in plans]
        # Random binary trees read only the previous layer, which saves concatenating all earlier outputs.
        self._children_in_last = [
            bool(min(plan.left_slots.min(), plan.right_slots.min()) >= self._slot_offsets[depth])
            for depth, plan in enumerate(plans)
        ]

    # ------------------------------------------------------------------ parameters
    @property
    def device(self) -> torch.device:
        return self.leaf.params.device

    @property
    def dtype(self) -> torch.dtype:
        return self.leaf.params.dtype

    def log_weights(self) -> list[torch.Tensor]:
        """Return the normalised log weights (P, out, K, K) of every einsum layer."""
        return [layer.log_weights() for layer in self.einsum_layers]

    def mixing_log_weights(self) -> list[torch.Tensor | None]:
        """Return the log weights (regions, out, C) of every mixing layer, None where there is none."""
        return [m.log_weights() if has else None for m, has in zip(self.mixing_layers, self._has_mixing)]

    def initialize_leaves(self, x: torch.Tensor, seed: int = 0) -> None:
        """Initialise the leaf parameters from data x (batch, num_vars[, num_dims])."""
        x, _ = check_input(self, x, None)
        self.leaf.initialize_from_data(x, seed)

    # ------------------------------------------------------------------ forward pass
    def forward(self, x: torch.Tensor, marginalize: torch.Tensor | None = None) -> torch.Tensor:
        """Return log p(x) with shape (batch,).

        Args:
            x: (batch, num_vars) or (batch, num_vars, num_dims).
            marginalize: bool (num_vars,) or (batch, num_vars), True where a variable is summed
                out; those entries of x are never read (they may hold NaN).
        """
        x, observed = check_input(self, x, marginalize)
        return self.evaluate(x, observed)

    def evaluate(
        self,
        x: torch.Tensor,
        observed: torch.Tensor | None,
        log_weights: list[torch.Tensor] | None = None,
        mixing_log_weights: list[torch.Tensor | None] | None = None,
        leaf_features: torch.Tensor | None = None,
        trace: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Trace]:
        """Run the circuit on checked input with the given (or the network's own) parameters.

        The parameter arguments let EM record statistics and let SPAN pass per-sample weights.
        Returns log-values (batch,), and the `Trace` when `trace` is True.
        """
        log_weights = self.log_weights() if log_weights is None else log_weights
        mixing_log_weights = self.mixing_log_weights() if mixing_log_weights is None else mixing_log_weights
        leaf_features = self.leaf.features() if leaf_features is None else leaf_features

        leaves = self.leaf(x, observed, leaf_features)
        pieces = [leaves]
        stored = Trace(leaves, [], [], [], [], [])
        for depth, layer in enumerate(self.einsum_layers):
            # Every value is a (batch, slots, K) view of a contiguous (slots, K, batch) tensor (see
            # spanlib.layers), so children are gathered as whole rows of that layout.
            local = self._children_in_last[depth]
            if local:
                table = pieces[-1].permute(1, 2, 0)
            else:
                table = torch.cat([piece.permute(1, 2, 0) for piece in pieces], dim=0)
            offset = self._slot_offsets[depth] if local else 0
            left = table.index_select(0, layer.left_slots - offset).permute(2, 0, 1)
            right = table.index_select(0, layer.right_slots - offset).permute(2, 0, 1)
            out = layer(left, right, log_weights[depth])
            if self._has_mixing[depth]:
                regions = self.mixing_layers[depth](out, mixing_log_weights[depth])
            else:
                regions = out
            pieces.append(regions)
            if trace:
                stored.left.append(left)
                stored.right.append(right)
                stored.einsum.append(out)
                stored.log_weights.append(log_weights[depth])
                stored.mixing_log_weights.append(mixing_log_weights[depth])
        root = pieces[-1][:, 0, 0]
        return (root, stored) if trace else root

    # ------------------------------------------------------------------ queries
    def log_prob(self, x: torch.Tensor, marginalize: torch.Tensor | None = None) -> torch.Tensor:
        """Return log p(x) (batch,); the same as calling the network."""
        return self(x, marginalize)

    def sample(
        self,
        n: int | None = None,
        evidence: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Draw samples (n or batch, num_vars, num_dims).

        Without evidence, draws `n` samples from p. With `evidence` (batch, num_vars[, num_dims])
        and `mask` (True = missing), draws the missing entries from p(missing | observed) and
        returns the observed entries unchanged.
        """
        from .inference import top_down

        return top_down(self, n, evidence, mask, mode="sample", seed=seed)

    def mpe(self, evidence: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return the approximate most probable explanation of the missing entries (True in `mask`).

        Greedy: after an upward pass on the observed part, each sum picks its most probable child
        given the evidence, and each reached leaf returns its mode. Observed entries are unchanged.
        This is the inpainting query.
        """
        from .inference import top_down

        return top_down(self, None, evidence, mask, mode="mpe")

    def em_step(self, x: torch.Tensor, step_size: float = 0.05, marginalize: torch.Tensor | None = None) -> torch.Tensor:
        """Run one stochastic EM step on the batch x and return its mean log-likelihood before the step."""
        from .em import em_step

        return em_step(self, x, step_size, marginalize)

    # ------------------------------------------------------------------ checkpoints
    def config(self) -> dict:
        """Return the constructor arguments as plain data."""
        return {
            "graph": self.graph.to_dict(),
            "leaf": self.leaf_family.name,
            "leaf_config": self.leaf_family.config(),
            "K": self.K,
            "num_dims": self.num_dims,
        }

    @classmethod
    def from_config(cls, config: dict) -> EinsumNetwork:
        """Build an untrained network from `config()`."""
        graph = RegionGraph.from_dict(config["graph"])
        leaf = leaf_from_config(config["leaf"], config["leaf_config"])
        return cls(graph, leaf, int(config["K"]), int(config["num_dims"]))

    def save(self, path: str | Path) -> None:
        """Write the configuration and parameters to `path` (a torch.save file)."""
        torch.save({"format": CHECKPOINT_FORMAT, "config": self.config(), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device | None = None) -> EinsumNetwork:
        """Read a network written by `save`, in the dtype it was saved in.

        A corrupt file, a file of another kind, or a configuration that does not fit the stored
        parameters raises ValueError naming the path.
        """
        from .checkpoints import read_checkpoint

        payload = read_checkpoint(path, CHECKPOINT_FORMAT, map_location)
        try:
            net = cls.from_config(payload["config"])
            # load_state_dict casts into the new network's dtype, so match the saved one first.
            net.to(payload["state_dict"]["leaf.params"].dtype)
            net.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as error:
            detail = f"missing key {error}" if isinstance(error, KeyError) else str(error)
            raise ValueError(
                f"checkpoint {path} does not match its configuration: {detail}; save the network again"
            ) from error
        return net.to(map_location) if map_location is not None else net

    def extra_repr(self) -> str:
        return f"num_vars={self.num_vars}, num_dims={self.num_dims}, K={self.K}, leaf={self.leaf_family}"
