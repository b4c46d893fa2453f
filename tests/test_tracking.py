"""W&B inside the library: quiet, and the caller's logging levels and environment as they were afterwards."""
import logging, os
import alpaca_ft


def test_prepare_with_wandb_offline_prints_nothing_and_keeps_logging_levels(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv('WANDB_DIR', str(tmp_path/'wandb'))
    monkeypatch.delenv('WANDB_SILENT', raising=False)
    import wandb  # noqa: F401  (W&B's loggers exist before the call, as in a caller that uses W&B too)
    levels = {k: v.level for k, v in logging.Logger.manager.loggerDict.items() if isinstance(v, logging.Logger)}
    env = dict(os.environ)
    alpaca_ft.prepare_dataset(out=tmp_path/'data', max_seq_len=64, eval_size=8, wandb='offline', progress=False)
    out, err = capfd.readouterr()
    assert 'wandb' not in (out + err).lower(), (out + err)[-500:]
    assert dict(os.environ) == env
    now = {k: v.level for k, v in logging.Logger.manager.loggerDict.items() if isinstance(v, logging.Logger)}
    assert {k: now[k] for k in levels} == levels
    raised = {k: v for k, v in now.items() if k.startswith('wandb') and v != levels.get(k, logging.NOTSET)}
    assert not raised, raised
