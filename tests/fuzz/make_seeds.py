#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus: small valid files of each shape the readers must accept.

Plain Python (struct + json, no numpy or safetensors package), so the seeds come from a second,
independent writer of both formats rather than from the code under test. The output is checked in
under tests/fuzz/corpus/; rerun this after changing it:  python3 tests/fuzz/make_seeds.py
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8,
         "F16": 2, "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape); data bytes are a counting pattern."""
    header, data = {}, b""
    for name, dtype, shape in tensors:
        count = SIZES[dtype]
        for dim in shape:
            count *= dim
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + count]}
        data += bytes((len(data) + i) * 37 % 256 for i in range(count))
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def npy(descr, shape, major=1, dict_text=None):
    item = {"|u1": 1, "<i4": 4, "<i8": 8, "<f4": 4}[descr]
    count = item
    for dim in shape:
        count *= dim
    shape_text = "(" + "".join(f"{d}, " for d in shape).rstrip(" ") + ")"
    if len(shape) > 1:
        shape_text = shape_text.replace(",)", ")")
    text = dict_text or f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"
    prefix_length = 10 if major == 1 else 12
    text += " " * (-(prefix_length + len(text) + 1) % 64) + "\n"
    length = struct.pack("<H", len(text)) if major == 1 else struct.pack("<I", len(text))
    data = bytes(i * 11 % 256 for i in range(count))
    return b"\x93NUMPY" + bytes([major, 0]) + length + text.encode("latin-1") + data


def write(folder, files):
    path = os.path.join(HERE, "corpus", folder)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for name, content in files.items():
        with open(os.path.join(path, name), "wb") as out:
            out.write(content)


write("safetensors", {
    "empty_header": safetensors([]),
    "checkpoint_like": safetensors(
        [("conv1.weight", "F32", [2, 1, 3, 3]), ("conv1.bias", "F32", [2]),
         ("optimizer.rmsprop.mean_square.conv1.bias", "F32", [2])],
        {"format": "pneumo-checkpoint", "format_version": "1", "input_size": "150",
         "classes": '["NORMAL","PNEUMONIA"]'}),
    "every_dtype": safetensors([(f"t_{d.lower()}", d, [2]) for d in SIZES]),
    "scalar_and_empty": safetensors([("scalar", "F64", []), ("empty", "F32", [0, 3]),
                                     ("labels", "U8", [5])]),
    "metadata_only": safetensors([], {"key": "value", "unicode": "\u00e9\u4e2d"}),
    "unpadded_i64": safetensors([("step", "I64", [1]), ("mask", "BOOL", [2, 2])], pad=False),
})

write("npy", {
    "u8_images": npy("|u1", [2, 3, 3]),
    "u8_labels": npy("|u1", [7]),
    "i32_matrix": npy("<i4", [3, 4]),
    "i64_vector": npy("<i8", [2]),
    "f32_scalar": npy("<f4", []),
    "f32_empty": npy("<f4", [0, 150, 150]),
    "version2": npy("|u1", [4], major=2),
    "version3": npy("<f4", [2, 2], major=3),
    "hand_written": npy("<f4", [2, 3], dict_text="{\"shape\": (2,3), 'fortran_order': False, "
                                                  "'descr': '<f4'}"),
    "python2_long": npy("|u1", [3], dict_text="{'descr': '|u1', 'fortran_order': False, "
                                              "'shape': (3L,), }"),
})
