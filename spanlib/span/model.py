"""Sum-Product-Attention Networks: an Einsum network whose sum weights attention re-weights per sample.

One Transformer encoder per einsum layer reads the input x and outputs logits z(x) over the
K x K child pairs of every sum of its layer. The layer then uses

    W^S(x)[p, k] = W[p, k] * A(x)[p, k] / sum_ij (W[p, k] * A(x)[p, k]),   A(x) = softmax_ij z(x),

instead of W. The root value is no longer a normalised log-density: it is the negative energy
-E(x). Marginals, sampling and MPE use the plain Einsum network (`span.einet`), unless the
encoders were trained with random token masking (`mask_probability > 0`), in which case
`span(x, marginalize=mask)` keeps attention on and the encoders see the missing tokens as such.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoints import read_checkpoint
from ..einet import EinsumNetwork
from ..inputs import check_input
from ..layers import normalize_log_weights
from .embeddings import EMBEDDINGS, Embedding
from .heads import make_head

CHECKPOINT_FORMAT = "spanlib.SPAN/1"


class LayerEncoder(nn.Module):
    """Projection, learned positions, a summary token and a Transformer encoder for one einsum layer.

    Shapes: token features (batch, tokens, features) -> summary (batch, d_model), the output at the
    summary token.
    """

    def __init__(self, num_tokens: int, features: int, depth: int, heads: int, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.project = nn.Linear(features, d_model)
        self.position = nn.Parameter(torch.randn(1, num_tokens + 1, d_model) * 0.02)
        self.summary_token = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.project(tokens)
        h = torch.cat([self.summary_token.expand(h.shape[0], -1, -1), h], dim=1) + self.position
        *lower, top = self.encoder.layers
        for layer in lower:
            h = layer(h)
        return self._summary_output(top, h)

    @staticmethod
    def _summary_output(layer: nn.TransformerEncoderLayer, h: torch.Tensor) -> torch.Tensor:
        """Run the top (pre-norm) encoder layer for the summary token only; equals layer(h)[:, 0].

        Only the summary token's output is read, so the query, the attention output and the
        feed-forward block are needed for that one token, while keys and values still come from
        every token. With 17 tokens and d_ff = d_model / 2 this skips 56% of the top layer's
        multiply-adds.
        """
        normed = layer.norm1(h)
        attended = layer.self_attn(normed[:, :1], normed, normed, need_weights=False)[0]
        summary = h[:, :1] + layer.dropout1(attended)
        hidden = layer.dropout(layer.activation(layer.linear1(layer.norm2(summary))))
        summary = summary + layer.dropout2(layer.linear2(hidden))
        return summary[:, 0]


class SPAN(nn.Module):
    """A Sum-Product-Attention Network.

    Args:
        einet: the Einsum network whose sums are re-weighted (`span.einet`).
        embedding: `BernoulliEmbedding()`, `PatchEmbedding(channels, height, width, patch_size)` or
            `LinearEmbedding(num_dims)`.
        depth, heads, d_model, d_ff: Transformer encoder layers, attention heads, model width and
            feed-forward width of each encoder.
        dropout: dropout inside the encoders.
        head: "lowrank" (default, d_model -> `rank` -> logits) or "dense" (one linear layer, our
            reading of the paper's feed-forward layer).
        rank: width of the low-rank head.
        reweight_mixing: also re-weight the mixing layers (for random binary trees: the root's
            mixture over replicas). Off by default, as in the paper.
        mask_probability: fraction of tokens masked at random while training, so that attention
            can stay on for marginal queries. The variables of a masked token are marginalised in
            the circuit as well, so a training step then maximises the -E of the visible variables,
            the quantity that a marginal query returns. 0 (default) follows the paper: attention is
            off whenever a variable is marginalised.
    """

    def __init__(
        self,
        einet: EinsumNetwork,
        embedding: Embedding,
        depth: int = 2,
        heads: int = 4,
        d_model: int = 64,
        d_ff: int = 128,
        dropout: float = 0.0,
        head: str = "lowrank",
        rank: int = 64,
        reweight_mixing: bool = False,
        mask_probability: float = 0.0,
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if not 0 <= mask_probability < 1:
            raise ValueError(f"mask_probability must be in [0, 1), got {mask_probability}")
        embedding.bind(einet.num_vars, einet.num_dims, einet.leaf_family)
        self.einet, self.embedding = einet, embedding
        self.settings = dict(depth=depth, heads=heads, d_model=d_model, d_ff=d_ff, dropout=dropout, head=head,
                             rank=rank, reweight_mixing=reweight_mixing, mask_probability=mask_probability)
        self.mask_probability = mask_probability

        tokens, features = embedding.num_tokens, embedding.token_features
        self.encoders = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.mixing_heads = nn.ModuleList()
        for layer, mixing, has_mixing in zip(einet.einsum_layers, einet.mixing_layers, einet._has_mixing):
            self.encoders.append(LayerEncoder(tokens, features, depth, heads, d_model, d_ff, dropout))
            self.heads.append(make_head(head, d_model, tuple(layer.logits.shape), rank))
            if reweight_mixing and has_mixing:
                self.mixing_heads.append(make_head(head, d_model, tuple(mixing.logits.shape), rank))
            else:
                self.mixing_heads.append(nn.Identity())
        self.reweight_mixing = reweight_mixing

    # ------------------------------------------------------------------ parameter groups
    def einet_parameters(self) -> list[nn.Parameter]:
        return list(self.einet.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoders and heads (everything outside the Einsum network)."""
        return list(self.encoders.parameters()) + list(self.heads.parameters()) + list(self.mixing_heads.parameters())

    @property
    def device(self) -> torch.device:
        return self.einet.device

    # ------------------------------------------------------------------ attention
    def _summaries(self, x: torch.Tensor, observed: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.embedding(x, observed)
        return [encoder(tokens) for encoder in self.encoders]

    def _head_logits(self, summaries: list[torch.Tensor]):
        """Return the logits of the einsum and mixing layers for per-layer encoder summaries (batch, d_model)."""
        logits = [head(s) for head, s in zip(self.heads, summaries)]
        mixing = [
            head(s) if self.reweight_mixing and has else None
            for head, s, has in zip(self.mixing_heads, summaries, self.einet._has_mixing)
        ]
        return logits, mixing

    def _reweight(self, logits, mixing_logits):
        """Return the log weights log W^S of the einsum and mixing layers for given attention logits."""
        log_weights = [normalize_log_weights(w.unsqueeze(0) + z, 2) for w, z in zip(self.einet.log_weights(), logits)]
        mixing = self.einet.mixing_log_weights()
        if self.reweight_mixing:
            mixing = [
                None if w is None else torch.log_softmax(w.unsqueeze(0) + z, dim=-1)
                for w, z in zip(mixing, mixing_logits)
            ]
        return log_weights, mixing

    def _prepare(self, x, marginalize):
        x, observed = check_input(self.einet, x, marginalize)
        if self.training and self.mask_probability > 0:
            draw = torch.rand(x.shape[0], self.embedding.num_tokens, device=x.device) < self.mask_probability
            hidden = self.embedding.variable_mask(draw)
            observed = ~hidden if observed is None else observed & ~hidden
        return x, observed

    def attention_weights(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return A(x) per einsum layer, each (batch, partitions, out, K, K) summing to 1 over the last two dims.

        `out` is K, except 1 in the root layer.
        """
        x, observed = check_input(self.einet, x, None)
        logits, _ = self._attention_logits(x, None)
        return [normalize_log_weights(z, 2).exp() for z in logits]

    def sum_weights(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the re-weighted W^S(x) per einsum layer, each (batch, partitions, out, K, K)."""
        x, observed = check_input(self.einet, x, None)
        log_weights, _ = self._reweight(*self._attention_logits(x, None))
        return [w.exp() for w in log_weights]

    # ------------------------------------------------------------------ energy
    def forward(self, x: torch.Tensor, marginalize: torch.Tensor | None = None) -> torch.Tensor:
        """Return the negative energy -E(x) with shape (batch,).

        With `marginalize` (True = missing), a sample with missing variables keeps attention on
        only if the encoders were trained with token masking (`mask_probability > 0`). Otherwise
        its value is the Einsum network's marginal. A sample with no missing variable always gets
        -E(x), whatever the other rows of the batch miss.
        """
        x, observed = self._prepare(x, marginalize)
        if observed is not None and self.mask_probability == 0:
            return self._attention_off_where_missing(x, observed)
        logits, mixing_logits = self._attention_logits(x, observed)
        return self._energy(x, observed, logits, mixing_logits)

    def _attention_off_where_missing(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Return -E(x) for the complete rows and the Einsum network's marginal for the others (batch,).

        The two groups run separately, so the encoders never read the entries of a missing
        variable, which may hold NaN.
        """
        complete = observed.all(dim=1)
        if not complete.any():
            return self.einet.evaluate(x, observed)
        if complete.all():
            return self._energy(x, None, *self._attention_logits(x, None))
        values = x.new_empty(x.shape[0])
        values[complete] = self._energy(x[complete], None, *self._attention_logits(x[complete], None))
        values[~complete] = self.einet.evaluate(x[~complete], observed[~complete])
        return values

    def _attention_logits(self, x, observed):
        """Return the logits of the einsum and mixing layers for checked x (encoders and heads only)."""
        return self._head_logits(self._attention_summaries(x, observed))

    def _attention_summaries(self, x, observed):
        """Return the encoders' summaries (batch, d_model) per layer for checked x; None observes every variable."""
        visible = observed if observed is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return self._summaries(x, visible)

    def _energy(self, x, observed, logits, mixing_logits):
        """Return -E(x) for checked x and given attention logits.

        Training reuses one set of logits for two circuit passes, because the logits do not depend
        on the Einsum network's parameters.
        """
        log_weights, mixing = self._reweight(logits, mixing_logits)
        return self.einet.evaluate(x, observed, log_weights, mixing)

    def negative_energy(self, x: torch.Tensor, marginalize: torch.Tensor | None = None) -> torch.Tensor:
        """Return -E(x) (batch,); the same as calling the model."""
        return self(x, marginalize)

    def log_prob(self, x: torch.Tensor, log_z: float | None = None, method: str = "exact") -> torch.Tensor:
        """Return log p(x) = -E(x) - log Z (batch,).

        Pass `log_z` (a float or the result of `log_partition_function`) to avoid recomputing Z,
        which enumerates or samples on every call. -E(x) is evaluated in eval mode, like Z, because
        dropout and token masking in train mode would change it from call to call. The previous
        mode is restored afterwards.
        """
        from .partition import log_partition_function

        was_training = self.training
        self.eval()
        try:
            if log_z is None:
                log_z = log_partition_function(self, method=method).value
            return self(x) - float(getattr(log_z, "value", log_z))
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ inference with attention off
    def sample(self, n: int | None = None, evidence=None, mask=None, seed: int | None = None) -> torch.Tensor:
        """Sample through the Einsum network with the encoders switched off."""
        return self.einet.sample(n, evidence=evidence, mask=mask, seed=seed)

    def mpe(self, evidence: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Approximate MPE (inpainting) through the Einsum network with the encoders switched off."""
        return self.einet.mpe(evidence, mask)

    # ------------------------------------------------------------------ checkpoints
    def config(self) -> dict:
        return {
            "einet": self.einet.config(),
            "embedding": self.embedding.name,
            "embedding_config": self.embedding.config(),
            **self.settings,
        }

    @classmethod
    def from_config(cls, config: dict) -> SPAN:
        einet = EinsumNetwork.from_config(config["einet"])
        embedding = EMBEDDINGS[config["embedding"]](**config["embedding_config"])
        settings = {k: v for k, v in config.items() if k not in ("einet", "embedding", "embedding_config")}
        return cls(einet, embedding, **settings)

    def save(self, path: str | Path) -> None:
        """Write configuration and parameters to `path`."""
        torch.save({"format": CHECKPOINT_FORMAT, "config": self.config(), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location=None) -> SPAN:
        """Read a model written by `save`; a foreign or mismatched file raises ValueError naming the path."""
        payload = read_checkpoint(path, CHECKPOINT_FORMAT, map_location)
        try:
            model = cls.from_config(payload["config"])
            # load_state_dict copies into the new float32 parameters, so a float64 model needs the cast first.
            model.to(payload["state_dict"]["einet.leaf.params"].dtype)
            model.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, RuntimeError) as error:
            raise ValueError(f"checkpoint {path} does not match its configuration: {error}") from error
        return model.to(map_location) if map_location is not None else model

    def extra_repr(self) -> str:
        s = self.settings
        return (f"embedding={self.embedding.name}, depth={s['depth']}, heads={s['heads']}, d_model={s['d_model']}, "
                f"d_ff={s['d_ff']}, head={s['head']}, reweight_mixing={s['reweight_mixing']}")
