#!/usr/bin/env python3
"""Writes the golden ids of the text layer's tests with the reference `tokenizers` library.

For every entry of corpus.json and each tokenizer it records the ids of encode(text) with
added tokens matched ("special") and with no added tokens at all ("plain": the tokenizer.json
with its added_tokens list emptied), decode(ids) where it differs from the text, and whether
encode(decode(ids)) gives the ids back. Entries above LARGE_BYTES keep only the id count, an
FNV-1a-64 hash of the ids (4 little-endian bytes each) and the first 256 ids.

Usage (from the repository root):
  python3 tests/text/golden/generate_golden.py --name deepseek_v3 \
      --tokenizer-json DIR/tokenizer.json \
      --tokenizer-config tests/text/fixtures/dsv4_tokenizer_config.json --out OUT.json
"""
import argparse
import json
import random
import sys
import time

import tokenizers
from tokenizers import AddedToken, Tokenizer

LARGE_BYTES = 20000


def corpus_texts(corpus_path):
    with open(corpus_path, encoding="utf-8") as f:
        entries = json.load(f)["entries"]
    plain_texts = [e["text"] for e in entries if "text" in e]
    for entry in entries:
        if "text" in entry:
            text = entry["text"]
        elif "hex" in entry:
            text = bytes.fromhex(entry["hex"]).decode("utf-8", "replace")
        elif "repeat" in entry:
            text = entry["repeat"] * entry["times"]
        elif "file" in entry:
            with open(entry["file"], encoding="utf-8", newline="") as f:
                text = f.read()
        elif "concat_texts_until_bytes" in entry:
            limit = entry["concat_texts_until_bytes"]
            parts, size = [], 0
            while size < limit:
                for piece in plain_texts:
                    parts.append(piece + "\n")
                    size += len(piece.encode("utf-8")) + 1
            text = "".join(parts)
        else:
            raise ValueError(f"corpus entry {entry['name']} has no text source")
        yield entry["name"], text


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for token_id in ids:
        for byte in int(token_id).to_bytes(4, "little"):
            h ^= byte
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def add_config_tokens(tok, config_path):
    """Adds tokenizer_config.json's added_tokens_decoder entries, checking the ids they get."""
    if not config_path:
        return
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    for id_text, spec in sorted(config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0])):
        token = AddedToken(spec["content"], single_word=spec.get("single_word", False),
                           lstrip=spec.get("lstrip", False), rstrip=spec.get("rstrip", False),
                           normalized=spec.get("normalized", True), special=spec.get("special", False))
        if spec.get("special", False):
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        got = tok.token_to_id(spec["content"])
        if got != int(id_text):
            raise SystemExit(f"{spec['content']} got id {got}, config says {id_text}")


def record(tok, text, ids):
    size = len(text.encode("utf-8"))
    out = {}
    if size > LARGE_BYTES:
        out.update(count=len(ids), fnv1a64=fnv1a64(ids), head=ids[:256])
    else:
        out["ids"] = ids
    decoded = tok.decode(ids, skip_special_tokens=False)
    if decoded != text:
        out["decoded"] = decoded if size <= LARGE_BYTES else None
        out["decoded_fnv1a64"] = fnv1a64(list(decoded.encode("utf-8")))
    skipped = tok.decode(ids, skip_special_tokens=True)
    if skipped != decoded:
        out["decoded_skip_special"] = skipped if size <= LARGE_BYTES else None
    return out, decoded


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--tokenizer-json", required=True)
    parser.add_argument("--tokenizer-config", default="")
    parser.add_argument("--corpus", default="tests/text/golden/corpus.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    with open(args.tokenizer_json, encoding="utf-8") as f:
        spec = json.load(f)
    full = Tokenizer.from_file(args.tokenizer_json)
    add_config_tokens(full, args.tokenizer_config)
    spec["added_tokens"] = []
    plain = Tokenizer.from_str(json.dumps(spec))

    results = []
    timing = {}
    for name, text in corpus_texts(args.corpus):
        entry = {"name": name}
        for mode, tok in (("special", full), ("plain", plain)):
            start = time.perf_counter()
            ids = tok.encode(text, add_special_tokens=False).ids
            timing[name + "/" + mode] = time.perf_counter() - start
            data, decoded = record(tok, text, ids)
            data["roundtrip"] = tok.encode(decoded, add_special_tokens=False).ids == ids
            entry[mode] = data
        results.append(entry)

    # Decoding of arbitrary id sequences: specials, byte tokens that split characters, any id.
    rng = random.Random(1234)
    vocab_size = full.get_vocab_size(with_added_tokens=True)
    specials = sorted({full.token_to_id(t.content) for t in full.get_added_tokens_decoder().values()})
    decode_cases = []
    for _ in range(40):
        ids = []
        for _ in range(rng.randint(1, 24)):
            pick = rng.random()
            if pick < 0.2:
                ids.append(rng.choice(specials))
            elif pick < 0.5:
                ids.append(rng.randint(0, min(600, vocab_size - 1)))
            else:
                ids.append(rng.randint(0, vocab_size - 1))
        decode_cases.append({
            "ids": ids,
            "text": full.decode(ids, skip_special_tokens=False),
            "text_skip_special": full.decode(ids, skip_special_tokens=True),
        })

    doc = next(t for n, t in corpus_texts(args.corpus) if n == "doc_100k_mixed")
    start = time.perf_counter()
    for _ in range(5):
        full.encode(doc, add_special_tokens=False)
    seconds = (time.perf_counter() - start) / 5
    output = {
        "tokenizer": args.name,
        "generator": f"tokenizers {tokenizers.__version__}, Python {sys.version.split()[0]}",
        "vocab_size": vocab_size,
        "reference_encode_mb_per_s_doc_100k": round(len(doc.encode("utf-8")) / seconds / 1e6, 2),
        "entries": results,
        "decode_cases": decode_cases,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(output, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{args.name}: {len(results)} entries, vocab {vocab_size}, "
          f"{output['reference_encode_mb_per_s_doc_100k']} MB/s, "
          f"roundtrip failures: {[r['name'] for r in results if not r['special']['roundtrip']]}")


if __name__ == "__main__":
    main()
