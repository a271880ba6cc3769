"""The corpus: ModelSurgery's packed token file, read in place through a memory map.

data/corpus.json describes the file (header bytes, token dtype, count) and names the window lists the exporter wrote:
window w covers tokens [w * T, w * T + T + 1), T inputs and their T next-token targets, exactly as TokenWindows does
locally, and the training/evaluation windows are the local run's split. Nothing is converted or copied, so a corpus of
billions of tokens costs no more than its file.
"""
import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset


def open_corpus(root, corpus_json):
    """The token array (a read-only memory map) and the corpus description."""
    with open(os.path.join(root, corpus_json), encoding="utf-8") as f:
        corpus = json.load(f)
    tokens = np.memmap(
        os.path.join(root, corpus["tokens"]),
        dtype=np.dtype(corpus["dtype"]),
        mode="r",
        offset=corpus["header_bytes"],
        shape=(corpus["count"],),
    )
    return tokens, corpus


class TokenWindows(Dataset):
    """Windows of seq_len + 1 tokens as {"input_ids": [T], "labels": [T]} int64 tensors.

    The order of the windows is a permutation drawn from (seed, epoch), so every process of every node sees the same
    order and a resumed run can skip exactly the batches it has done.
    """

    def __init__(self, tokens, windows, seq_len, seed=None):
        self.tokens = tokens
        self.windows = np.asarray(windows, dtype=np.int64)
        self.seq_len = seq_len
        self.seed = seed
        self.order = self.windows
        self.set_epoch(0)

    def set_epoch(self, epoch):
        if self.seed is not None:
            self.order = np.random.default_rng([self.seed, epoch]).permutation(self.windows)

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        start = int(self.order[i]) * self.seq_len
        window = torch.from_numpy(np.array(self.tokens[start : start + self.seq_len + 1], dtype=np.int64))
        return {"input_ids": window[:-1], "labels": window[1:]}
