"""Puts plugins/python-sdk on sys.path so `stagecraft_sdk` imports without installing."""

import os
import sys

SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if SDK_ROOT not in sys.path:
    sys.path.insert(0, SDK_ROOT)
