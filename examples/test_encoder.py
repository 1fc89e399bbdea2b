"""A tiny BERT-like text classifier: token ids and an attention mask in, logits out.

Built from a config dataclass with random weights (no download): token and position
embeddings, a stack of ``nn.TransformerEncoderLayer(batch_first=True)``, and a pooled
classification head on the first ([CLS]) token, as in BERT.

Two inputs with two dynamic dims each: ``input_ids`` (int64 token ids in [0, vocab)) and
``attention_mask`` (bool, True for real tokens, False for padding), both
``[batch, seq]``. ``dynamic=`` names the dims of each input by ``forward``'s parameter
names, and ``dims=`` gives their ranges; the plugin derives the hypothesis sizes, the
``torch.export`` dynamic shapes and the ONNX dynamic axes from that one declaration.
Token ids are drawn in the range seen in the test's example, so they stay valid indices
for the embedding; the masks are drawn at random (padding anywhere, as a worst case).
"""

from dataclasses import dataclass

import pytest
import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 100
    max_positions: int = 16
    hidden: int = 32
    heads: int = 2
    layers: int = 2
    ffn: int = 64
    classes: int = 3


class TinyEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden)
        self.position_embedding = nn.Embedding(config.max_positions, config.hidden)
        self.norm = nn.LayerNorm(config.hidden)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=config.hidden,
                nhead=config.heads,
                dim_feedforward=config.ffn,
                dropout=0.1,  # inactive in eval mode, as the model is served
                batch_first=True,
            )
            for _ in range(config.layers)
        )
        self.pooler = nn.Linear(config.hidden, config.hidden)
        self.classifier = nn.Linear(config.hidden, config.classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        x = self.norm(self.token_embedding(input_ids) + self.position_embedding(positions))
        # [CLS] (position 0) is never padding: a row that is all padding would otherwise
        # give NaN attention (softmax over nothing), in eager and in every export alike.
        # (An `|` with a broadcast row, not a slice-and-cat: attention_mask[:, 1:] has size
        # seq - 1, and torch.export specializes a size that can be 1, so seq=2 would break.)
        attended = attention_mask | (positions == 0)
        padding = ~attended  # nn.TransformerEncoderLayer wants True where a key is padding
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.classifier(pooled)


@pytest.mark.torchexport(
    dims={"batch": (1, 4), "seq": (2, 16)},
    dynamic={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
)
def test_encoder_classifies_padded_batch():
    config = EncoderConfig()
    model = TinyEncoder(config).eval()
    input_ids = torch.randint(0, config.vocab_size, (2, 8))
    attention_mask = torch.ones(2, 8, dtype=torch.bool)
    attention_mask[1, 5:] = False  # the second sentence is 5 tokens, padded to 8
    logits = model(input_ids, attention_mask)
    assert logits.shape == (2, config.classes)
    assert torch.isfinite(logits).all()
