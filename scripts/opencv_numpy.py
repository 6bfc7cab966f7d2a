"""OpenCV and NumPy for Python, for the scripts that need them (pack_gpu_data.py,
unpack_gpu_data.py): their --help answered without either, and a one-line hint instead of a
traceback where one is missing.
"""
import sys


def load(script, doc):
    """(cv2, numpy) for `script`, after printing `doc` and exiting 0 when asked for --help."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(doc)
        sys.exit(0)
    try:
        import cv2
        import numpy
    except ImportError as missing:
        sys.exit(f"{script} needs OpenCV and NumPy for Python ({missing.name} is missing): "
                 "apt-get install python3-opencv python3-numpy, or pip install opencv-python numpy")
    return cv2, numpy
