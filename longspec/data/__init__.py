"""Datasets and prompt building.

Every ``conf/data/<name>.yaml`` instantiates a class with
``load(tokenizer, prompt_format, context_len=None) -> list[Sample]``; the runner then drops
prompts over its context budget with ``split_fitting``.
"""

from longspec.data.aime import Aime24Dataset
from longspec.data.jsonl import JsonlDataset
from longspec.data.localtext import LocalTextDataset
from longspec.data.longbench import LongBenchDataset
from longspec.data.prompts import PROMPT_FORMATS, build_sample, get_prompt_format
from longspec.data.pycode import PyCodeDataset, split_files
from longspec.data.sample import PromptDataset, Sample, split_fitting

__all__ = [
    "PROMPT_FORMATS",
    "Aime24Dataset",
    "JsonlDataset",
    "LocalTextDataset",
    "LongBenchDataset",
    "PromptDataset",
    "PyCodeDataset",
    "Sample",
    "build_sample",
    "get_prompt_format",
    "split_files",
    "split_fitting",
]
