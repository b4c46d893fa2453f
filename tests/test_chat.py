"""Multi-turn chat rows: each conversation rendered once by its chat template, every assistant turn
trained with the end-of-turn marker the template writes (no EOS appended), on real templates built offline."""
import contextlib, io, json, logging, os
from pathlib import Path
import pytest
from tokenizers import processors

from alpaca_ft.data import DataError, EmptyField, load_rows, validate_row
from alpaca_ft.prompts import chat_prompt, chat_turns, render, row_messages
from alpaca_ft.tokenization import load_tokenizer, tokenize_chats

REPO = Path(__file__).resolve().parents[1]

# the chat templates as their models ship them (Jinja), written onto tokenizers built here, offline
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
ALTERNATE = ("{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
             "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
             "{% endif %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
         "{{ raise_exception('System role not supported') }}{% endif %}"
         "{% for message in messages %}" + ALTERNATE +
         "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
         "{% set role = message['role'] %}{% endif %}"
         "{{ '<start_of_turn>' + role + '\n' + message['content'] | "
         "trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}"
         "{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}" + ALTERNATE +
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
           "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

# name: (template, BOS, EOS, other special tokens, the marker that ends an assistant turn, system role?)
TEMPLATES = {
    'chatml': (CHATML, None, '<|endoftext|>', ['<|im_start|>', '<|im_end|>'], '<|im_end|>', True),
    'llama3': (LLAMA3, '<|begin_of_text|>', '<|end_of_text|>', ['<|start_header_id|>', '<|end_header_id|>',
                                                                 '<|eot_id|>'], '<|eot_id|>', True),
    'gemma': (GEMMA, '<bos>', '<eos>', ['<start_of_turn>', '<end_of_turn>'], '<end_of_turn>', False),
    'mistral': (MISTRAL, None, None, [], None, False),  # ends a turn with its EOS, whatever it is
}


def shared(rel: str) -> Path:
    root = Path(os.environ.get('ALPACA_FT_SHARED', REPO.parent/'shared'))
    if not (root/rel).exists():
        pytest.skip(f'{root/rel} not found (set ALPACA_FT_SHARED to the shared/ folder)')
    return root/rel


def base_tokenizer(base: str):
    "The bundled byte-level BPE tokenizer, or Llama 2's SentencePiece one from shared/."
    return load_tokenizer(None if base == 'tiny' else str(shared('assets/llama-2-tokenizer')))


def templated(base: str, name: str):
    "A tokenizer built offline that renders and tokenizes as the model named `name` does."
    template, bos, eos, extra, _, _ = TEMPLATES[name]
    tok = base_tokenizer(base)
    new = [t for t in (bos, eos, *extra) if t and t not in tok.get_vocab()]
    tok.add_special_tokens({'additional_special_tokens': new})
    if bos:  # the tokenizer puts this BOS in front, as Llama 3's and Gemma's do
        tok.bos_token = bos
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f'{bos} $A', pair=f'{bos} $A {bos} $B',
            special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    if eos: tok.eos_token = eos
    tok.chat_template = template
    return tok


def marker(tok, name: str) -> str:
    return TEMPLATES[name][4] or tok.eos_token


def three_turns(system: bool) -> list[dict]:
    msgs = [{'role': 'user', 'content': 'What is the capital of France?'},
            {'role': 'assistant', 'content': 'Paris is the capital of France.'},
            {'role': 'user', 'content': 'And of Italy?'},
            {'role': 'assistant', 'content': 'Rome.'},
            {'role': 'user', 'content': 'Which one is bigger?'},
            {'role': 'assistant', 'content': 'Paris has more people, 2.1 million to 2.8.\nNo: Rome!'}]
    return ([{'role': 'system', 'content': 'Answer briefly.'}] if system else []) + msgs


def trained_runs(ids: list[int], labels: list[int], tok) -> list[str]:
    "Each run of consecutive trained tokens, decoded."
    runs, run = [], []
    for t, l in zip(list(ids) + [None], list(labels) + [-100]):
        if l != -100: run.append(t)
        elif run: runs, run = runs + [tok.decode(run)], []
    return runs


CASES = [(base, name) for base in ('tiny', 'llama2') for name in TEMPLATES]


@pytest.mark.parametrize('base,name', CASES)
def test_every_assistant_turn_is_trained_with_its_end_marker_and_nothing_else(base, name):
    tok = templated(base, name)
    msgs = three_turns(system=TEMPLATES[name][5])
    out = tokenize_chats([msgs], tok)
    ids, labels = out['input_ids'][0], out['labels'][0]
    answers = [m['content'] for m in msgs if m['role'] == 'assistant']
    assert trained_runs(ids, labels, tok) == [a + marker(tok, name) for a in answers]
    # the last answer only, on the same token ids
    last = tokenize_chats([msgs], tok, train_turns='last')
    assert last['input_ids'] == out['input_ids']
    assert trained_runs(ids, last['labels'][0], tok) == [answers[-1] + marker(tok, name)]
    # the ids are those of the template's text as the tokenizer encodes it: one BOS at most, no EOS appended
    text = tok.apply_chat_template(msgs, tokenize=False)
    if tok.bos_token and text.startswith(tok.bos_token) and tok('a')['input_ids'][0] == tok.bos_token_id:
        text = text[len(tok.bos_token):]
    assert ids == tok(text)['input_ids']
    if tok.bos_token_id is not None: assert ids.count(tok.bos_token_id) <= 1
    if marker(tok, name) != tok.eos_token: assert tok.eos_token_id not in ids
    assert labels[0] == -100


@pytest.mark.parametrize('base', ['tiny', 'llama2'])
def test_llama3_trims_answers_and_the_eot_id_is_trained_not_its_eos(base):
    tok = templated(base, 'llama3')
    msgs = [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': '  Hello.\n'}]
    out = tokenize_chats([msgs], tok)
    ids, labels = out['input_ids'][0], out['labels'][0]
    assert trained_runs(ids, labels, tok) == ['Hello.<|eot_id|>']
    assert ids[0] == tok.convert_tokens_to_ids('<|begin_of_text|>') and ids.count(ids[0]) == 1
    assert ids[-1] == tok.convert_tokens_to_ids('<|eot_id|>') and tok.eos_token == '<|end_of_text|>'
    assert tok.eos_token_id not in ids


def test_train_on_inputs_trains_every_token_but_the_first():
    tok = templated('tiny', 'chatml')
    out = tokenize_chats([three_turns(True)], tok, train_on_inputs=True)
    assert out['labels'][0] == [-100] + out['input_ids'][0][1:]


def test_gemma_refuses_a_system_message_naming_the_conversation():
    tok = templated('tiny', 'gemma')
    good = three_turns(system=False)
    with pytest.raises(DataError, match=r"conversation 1 \(starting 'Answer briefly\.'\): the chat template "
                                        r"refused the conversation \(.*System role not supported\)"):
        tokenize_chats([good, three_turns(system=True)], tok)


REFUSED = 'the chat template refused the conversation (TemplateError: System role not supported)'


def gemma_rows(bad: int, n: int = 30) -> list[dict]:
    "`n` conversations Gemma's template renders, but for row `bad`, which has a system message."
    rows = [{'messages': [{'role': 'user', 'content': f'Question {i}?'},
                          {'role': 'assistant', 'content': f'Answer {i}.'}]} for i in range(n)]
    rows[bad] = {'messages': three_turns(system=True)}
    return rows


def write_rows(rows: list[dict], path: Path) -> Path:
    "`rows` as a JSONL (a blank line after the fourth), a JSON array or a Parquet file."
    if path.suffix == '.jsonl':
        path.write_text(''.join(json.dumps(r) + '\n' + '\n' * (i == 3) for i, r in enumerate(rows)),
                        encoding='utf-8')
    elif path.suffix == '.json': path.write_text(json.dumps({'data': rows}, indent=1), encoding='utf-8')
    else:
        import pandas as pd
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize('kind,num_proc', [('jsonl', None), ('jsonl', 2), ('json', None), ('parquet', 2),
                                           ('list', None)])
def test_prepare_names_the_line_or_row_whose_conversation_the_template_refuses(tmp_path, monkeypatch, kind,
                                                                                 num_proc):
    import tempfile
    from alpaca_ft.prepare import prepare_dataset
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path/'tmp'))
    (tmp_path/'tmp').mkdir()
    rows = gemma_rows(bad=17)
    data = rows if kind == 'list' else str(write_rows(rows, tmp_path/f'chats.{kind}'))
    with pytest.raises(DataError) as e:
        prepare_dataset(data, tmp_path/'out', tokenizer=templated('tiny', 'gemma'), template='chat',
                        eval_size=4, max_seq_len=256, num_proc=num_proc, progress=False, verbose=False)
    where = {'jsonl': f'{data}, line 19', 'list': 'list (rows in memory), row 17'}.get(kind, f'{data}, row 17')
    assert str(e.value) == f'{where}: {REFUSED}'
    assert not (tmp_path/'out').exists() and not list((tmp_path/'tmp').iterdir())


def test_a_refused_conversation_is_one_line_exit_2_from_the_command(tmp_path):
    from alpaca_ft.cli import main
    tok = templated('tiny', 'gemma')
    tok.save_pretrained(tmp_path/'tok')
    p = write_rows(gemma_rows(bad=5), tmp_path/'chats.jsonl')
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
        rc = main(['prepare', str(p), '--template', 'chat', '--tokenizer', str(tmp_path/'tok'), '--eval-size',
                   '4', '--max-seq-len', '256', '--out', str(tmp_path/'out'), '--wandb', 'disabled',
                   '--no-progress'])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and lines == [f'alpaca_ft prepare: error: {p}, line 7: {REFUSED}'], err.getvalue()
    assert not (tmp_path/'out').exists()


def test_tokenizing_rows_in_batches_names_the_conversation_by_its_place_in_all_of_them():
    from alpaca_ft.prepare import tokenize_rows
    rows = gemma_rows(bad=6, n=10)
    with pytest.raises(DataError, match=r"^conversation 6 \(starting 'Answer briefly\.'\): the chat template"):
        tokenize_rows(rows, templated('tiny', 'gemma'), 'chat', progress=False, batch_size=4)


def test_a_template_that_rewrites_earlier_turns_is_refused_for_all_turns_not_for_the_last():
    tok = templated('tiny', 'chatml')  # as templates that drop the reasoning of earlier answers do
    earlier = "(message['content'] if loop.last or message['role'] != 'assistant' else 'x')"
    tok.chat_template = CHATML.replace("message['content']", earlier)
    msgs = three_turns(True)
    with pytest.raises(DataError, match="renders message 2 differently.*train_turns='last'"):
        tokenize_chats([msgs], tok)
    out = tokenize_chats([msgs], tok, train_turns='last')
    assert trained_runs(out['input_ids'][0], out['labels'][0], tok) == [msgs[-1]['content'] + '<|im_end|>']


def test_a_template_with_no_end_marker_gets_the_eos_after_each_answer_with_one_warning(caplog):
    tok = load_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    msgs = three_turns(True)
    with caplog.at_level(logging.WARNING, logger='alpaca_ft'):
        out = tokenize_chats([msgs, msgs], tok)
    answers = [m['content'] for m in msgs if m['role'] == 'assistant']
    assert trained_runs(out['input_ids'][0], out['labels'][0], tok) == [a + '</s>' for a in answers]
    assert sum('writes nothing after an assistant answer' in r.message for r in caplog.records) == 1


def test_the_bundled_template_ends_each_turn_with_eos():
    tok = load_tokenizer()
    msgs = three_turns(True)
    out = tokenize_chats([msgs], tok)
    answers = [m['content'] for m in msgs if m['role'] == 'assistant']
    assert trained_runs(out['input_ids'][0], out['labels'][0], tok) == [a + '</s>' for a in answers]
    assert out['input_ids'][0].count(tok.bos_token_id) == 1


def test_options_are_checked():
    tok = load_tokenizer()
    with pytest.raises(ValueError, match="train_turns must be 'all' or 'last', got 'first'"):
        tokenize_chats([three_turns(True)], tok, train_turns='first')
    with pytest.raises(TypeError, match='conversations must be a list of message lists'):
        tokenize_chats(three_turns(True)[0], tok)
    with pytest.raises(ValueError, match='message 2, an assistant answer, is blank'):
        chat_turns([{'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b'},
                    {'role': 'assistant', 'content': ' '}], tok)


# ---------------------------------------------------------------- SmolLM2's own (ChatML) tokenizer

def smollm2():
    from alpaca_ft.smollm2 import is_fetched, smollm2_dir
    if not is_fetched(smollm2_dir()): pytest.skip('SmolLM2 is not in the cache (alpaca_ft fetch smollm2)')
    return load_tokenizer('smollm2')


def test_smollm2_chat_keeps_its_first_im_start_and_trains_every_im_end():
    tok = smollm2()  # its BOS is <|im_start|>, which the tokenizer does not add: the text must keep it
    msgs = three_turns(system=False)
    prompt, answer = render({'messages': msgs}, 'chat', tok)
    assert prompt.startswith('<|im_start|>system\n') and prompt.endswith('<|im_start|>assistant\n')
    assert chat_prompt(msgs[:1], tok).startswith('<|im_start|>')
    out = tokenize_chats([msgs], tok)
    ids, labels = out['input_ids'][0], out['labels'][0]
    assert ids[0] == tok.convert_tokens_to_ids('<|im_start|>')
    answers = [m['content'] for m in msgs if m['role'] == 'assistant']
    assert trained_runs(ids, labels, tok) == [a + '<|im_end|>' for a in answers]
    assert ids == tok.apply_chat_template(msgs, tokenize=True, return_dict=True)['input_ids']


# ---------------------------------------------------------------- rows: messages and ShareGPT conversations

SHAREGPT = {'conversations': [{'from': 'system', 'value': 'Answer briefly.'},
                              {'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Hello.'},
                              {'from': 'human', 'value': 'Bye'}, {'from': 'gpt', 'value': 'Goodbye.'}]}


def test_sharegpt_rows_are_read_as_messages():
    msgs = [{'role': 'system', 'content': 'Answer briefly.'}, {'role': 'user', 'content': 'Hi'},
            {'role': 'assistant', 'content': 'Hello.'}, {'role': 'user', 'content': 'Bye'},
            {'role': 'assistant', 'content': 'Goodbye.'}]
    assert validate_row(SHAREGPT) == {'messages': msgs}
    assert row_messages(SHAREGPT) == msgs
    tok = load_tokenizer()
    assert render(SHAREGPT, 'chat', tok) == render({'messages': msgs}, 'chat', tok)
    with pytest.raises(DataError, match="needs template='chat'"): render(SHAREGPT, 'alpaca')


@pytest.mark.parametrize('row,err,reason', [
    ({'conversations': [{'from': 'human', 'value': 'Hi'}, {'from': 'bot', 'value': 'Yo'}]}, DataError,
     "conversations[1]: unknown from 'bot' (expected one of system, human, user, gpt, assistant)"),
    ({'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'model', 'content': 'Yo'}]}, DataError,
     "messages[1]: unknown role 'model' (expected one of system, user, assistant)"),
    ({'conversations': [{'from': 'system', 'value': 'Be kind.'}, {'from': 'human', 'value': 'Hi'}]},
     DataError,
     "'conversations' has no assistant turn"),
    ({'conversations': [{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': ' '},
                        {'from': 'human', 'value': 'Hm?'}, {'from': 'gpt', 'value': 'Yes.'}]}, EmptyField,
     "the assistant's answer conversations[1] is empty"),
    ({'conversations': [{'from': 'human', 'value': 'Hi'}, {'value': 'Yo'}]}, DataError,
     "conversations[1] needs string 'from' and 'value'"),
])
def test_bad_chat_rows_name_the_row_and_the_reason(row, err, reason):
    with pytest.raises(err) as e: validate_row(row, 'chats.jsonl', line=4)
    assert str(e.value) == f'chats.jsonl, line 4: {reason}'


def test_a_bad_chat_row_is_one_line_exit_2_from_the_command(tmp_path):
    from alpaca_ft.cli import main
    p = tmp_path/'chats.jsonl'
    bad = {'conversations': [{'from': 'human', 'value': 'Hi'}, {'from': 'bot', 'value': 'Yo'}]}
    p.write_text(json.dumps(SHAREGPT) + '\n' + json.dumps(bad) + '\n', encoding='utf-8')
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
        rc = main(['prepare', str(p), '--template', 'chat', '--out', str(tmp_path/'out'),
                   '--wandb', 'disabled', '--no-progress'])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1, err.getvalue()
    assert lines[0] == f"alpaca_ft prepare: error: {p}, line 2: conversations[1]: unknown from 'bot' " \
                       "(expected one of system, human, user, gpt, assistant)"
    assert not (tmp_path/'out').exists()


# ---------------------------------------------------------------- prepare: every turn reaches the packs

def unpack(ds) -> list[tuple[list[int], list[int]]]:
    "The examples in each pack, from their position ids."
    out = []
    for row in ds:
        starts = [i for i, p in enumerate(row['position_ids']) if p == 0] + [len(row['input_ids'])]
        out += [(row['input_ids'][a:b], row['labels'][a:b]) for a, b in zip(starts, starts[1:])]
    return out


def chat_rows(n: int = 24) -> list[dict]:
    rows = []
    for i in range(n):
        turns = [{'from': 'human', 'value': f'Question {i}?'}, {'from': 'gpt', 'value': f'Answer {i}.'}]
        for k in range(i % 3):
            turns += [{'from': 'human', 'value': f'More {k}?'}, {'from': 'gpt', 'value': f'Yes {i}-{k}.'}]
        rows.append({'conversations': turns})
    return rows


@pytest.mark.parametrize('train_turns', ['all', 'last'])
def test_prepare_trains_every_turn_of_sharegpt_rows(tmp_path, train_turns):
    import datasets
    from alpaca_ft.prepare import prepare_dataset
    tok = templated('tiny', 'chatml')
    rows = chat_rows()
    m = prepare_dataset(rows, tmp_path/'out', tokenizer=tok, max_seq_len=128, eval_size=4, template='chat',
                        train_turns=train_turns, progress=False, verbose=False)
    assert m['template'] == 'chat' and m['train_turns'] == train_turns
    got = []
    for split in ('train', 'eval'):
        for ids, labels in unpack(datasets.load_from_disk(str(tmp_path/'out'/split))):
            got.append(tuple(trained_runs(ids, labels, tok)))
    want = []
    for r in rows:
        answers = [t['value'] + '<|im_end|>' for t in r['conversations'] if t['from'] == 'gpt']
        want.append(tuple(answers if train_turns == 'all' else answers[-1:]))
    assert sorted(got) == sorted(want)


def test_prepare_with_two_processes_gives_the_same_chat_output(tmp_path):
    from alpaca_ft.prepare import prepare_dataset
    tok, rows = templated('tiny', 'chatml'), chat_rows()
    kw = dict(tokenizer=tok, max_seq_len=128, eval_size=4, template='chat', progress=False, verbose=False)
    one = prepare_dataset(rows, tmp_path/'one', **kw)
    two = prepare_dataset(rows, tmp_path/'two', num_proc=2, **kw)
    assert one['fingerprint'] == two['fingerprint']


def test_prepare_refuses_an_unknown_train_turns_before_any_work(tmp_path):
    from alpaca_ft.prepare import prepare_dataset
    with pytest.raises(ValueError, match="train_turns must be 'all' or 'last'"):
        prepare_dataset(chat_rows(), tmp_path/'out', template='chat', train_turns='every', progress=False)
    assert not (tmp_path/'out').exists()


@pytest.mark.parametrize('base,name', CASES)
def test_the_inference_prompt_is_the_start_of_the_trained_tokens(base, name):
    "What `generate` is prompted with (`render(row, 'chat')`) is what is trained before the last answer."
    tok = templated(base, name)
    msgs = three_turns(system=TEMPLATES[name][5])
    prompt, answer = render({'messages': msgs}, 'chat', tok)
    assert answer == msgs[-1]['content']
    ids, labels = (x[0] for x in tokenize_chats([msgs], tok, train_turns='last').values())
    n = labels.index(next(l for l in labels if l != -100))
    assert tok.decode(tok(prompt)['input_ids']) == tok.decode(ids[:n])
    # token for token too, except where GPT-2's pre-tokenizer splits '\n\n' before a word but not at the end
    # of a text (Llama 3's own pre-tokenizer keeps it whole in both places)
    if (base, name) != ('tiny', 'llama3'):
        assert tok(prompt)['input_ids'] == ids[:n]


def test_a_bos_the_tokenizer_does_not_add_stays_in_the_text():
    "SmolLM2's BOS is <|im_start|>, which its tokenizer does not put in front: the text must keep it."
    tok = templated('tiny', 'chatml')
    tok.bos_token = '<|im_start|>'
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single='$A', pair='$A $B',
                                                                         special_tokens=[])
    msgs = three_turns(system=True)
    want = '<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>assistant\n'
    assert chat_prompt(msgs[:1], tok) == want
    ids = tokenize_chats([msgs], tok)['input_ids'][0]
    assert ids == tok(tok.apply_chat_template(msgs, tokenize=False))['input_ids']
    assert ids[0] == tok.bos_token_id


@pytest.mark.parametrize('name', ['chatml', 'llama3', 'gemma', 'mistral'])
def test_generation_stops_at_the_marker_the_template_ends_a_turn_with(name):
    "A model trained on a chat template writes its end-of-turn marker; generation must stop there, not run on."
    import torch
    from alpaca_ft.generate import generate, stop_ids
    from alpaca_ft.model import tiny_llama
    tok = templated('tiny', name)
    end = tok.convert_tokens_to_ids(marker(tok, name))
    assert stop_ids(tok)[0] == tok.eos_token_id and end in stop_ids(tok)
    model = tiny_llama(len(tok)).eval()
    model.lm_head = torch.nn.Linear(model.config.hidden_size, len(tok), bias=True)
    with torch.no_grad():  # a head that always writes the end-of-turn marker
        model.lm_head.weight.zero_(); model.lm_head.bias.zero_(); model.lm_head.bias[end] = 1.0
    calls = []  # one forward pass a generated token: the marker (skipped in the text) must end it at once
    model.register_forward_hook(lambda *a: calls.append(1))
    assert generate(model, tok, ['Hello'], max_new_tokens=20) == [''] and len(calls) == 1


@pytest.mark.parametrize('template, msg', [(None, 'has no chat_template'),
                                           ('{% for m in messages %}{{ m.content }', 'not valid Jinja, line 1')])
def test_a_tokenizer_without_a_usable_chat_template_is_refused_before_any_row_is_read(tmp_path, monkeypatch,
                                                                                       template, msg):
    "Not blamed on a data line after every row was read: the tokenizer is checked first."
    import alpaca_ft.prepare as P
    def no_rows(*a, **k): raise AssertionError('rows were read before the chat template was checked')
    monkeypatch.setattr(P, 'RowReader', no_rows)
    tok = templated('tiny', 'chatml')
    tok.chat_template = template
    with pytest.raises(DataError, match=msg) as e:
        P.prepare_dataset(gemma_rows(bad=-1), tmp_path/'out', tokenizer=tok, template='chat', progress=False)
    assert 'line' not in str(e.value).split(':')[0] and not (tmp_path/'out').exists()
