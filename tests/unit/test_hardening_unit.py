"""Issue 32's checks that no tiny model can reach through an entry point: a pass too large for the machine, and
log lines that would quote a secret."""

import logging

import pytest

from gradspace.errors import GradspaceError


def test_a_pass_larger_than_the_machine_is_refused_with_a_micro_batch_that_fits():
    from gradspace.ftgd.checks import check_pass_memory

    # 64 pairs x 2 sentences x 20 tokens x 50,000 logits x 16 bytes = 2.0 GB.
    check_pass_memory(64, 20, 50_000, memory_bytes=3 * 2**30)
    with pytest.raises(GradspaceError, match=r"^a pass of 64 pairs of up to 20 tokens over a 50000-token vocabulary "
                                             r"needs about 1\.9 GiB, more than this machine's 1\.0 GiB; "
                                             r"set ftgd\.micro_batch_size=<a divisor of ftgd\.batch_size <= 33>$"):
        check_pass_memory(64, 20, 50_000, memory_bytes=2**30)


def test_log_lines_lose_secret_overrides_and_the_environment_secrets(monkeypatch):
    from gradspace.utils.run_config import SecretLogFilter

    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh12345")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a setting, not a secret: "false" stays
    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, "\t#%d : %s", (0, "+my_token=abc123 +x=hf_abcdefgh12345 a=false"), None)
    assert SecretLogFilter().filter(record)
    assert record.getMessage() == "\t#0 : +my_token=<redacted> +x=<redacted> a=false"
