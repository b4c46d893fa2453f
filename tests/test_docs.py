"""The docs site as a reader meets it: built by scripts/docs.py, opened in headless Chromium (Debian's, with its
chromedriver; nothing downloads a browser).

The site is built once per session (cached notebooks make a rebuild quick); `ALPACA_FT_DOCS_BUILT=1` says
scripts/test.sh has just built it. Screenshots land in `_docs/screenshot-*.png`."""
from __future__ import annotations
import functools, http.server, json, os, re, shutil, subprocess, sys, tempfile, threading
import urllib.error, urllib.parse, urllib.request
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT/'_docs'
sys.path.insert(0, str(ROOT/'scripts'))
import docs  # noqa: E402  scripts/docs.py

NOTEBOOKS = docs.notebooks()


def page_path(nb:Path) -> str: return '/' if nb.stem == 'index' else f'/{nb.stem}/'


# ---------------------------------------------------------------- without a browser

def test_nbdev_yml_in_step_with_settings():
    "nbs/nbdev.yml is exactly what nbdev's refresh_quarto_yml writes from settings.ini (so Quarto users get no diff)."
    from nbdev.config import get_config
    from nbdev.quarto import _nbdev_yml
    cfg = get_config(path=ROOT)
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    vals['doc_path'] = cfg.doc_path.name
    assert (ROOT/'nbs'/'nbdev.yml').read_text() == _nbdev_yml.format(**vals)


def test_quarto_config_valid():
    "_quarto.yml still names nbdev's metadata files and the site's stylesheet; sidebar.yml (generated) is ignored."
    import yaml
    q = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())
    assert q['project']['type'] == 'website' and q['metadata-files'] == ['nbdev.yml', 'sidebar.yml']
    assert (ROOT/'nbs'/q['format']['html']['css']).is_file()
    assert 'nbs/sidebar.yml' in (ROOT/'.gitignore').read_text().split()


def test_tidy_quarto_syntax():
    "What Quarto would render: front matter becomes a title, `echo: false` hides the input, source links are HTML."
    nb = {'cells': [
        {'cell_type': 'raw', 'metadata': {}, 'source': '---\ntitle: Packing\ndescription: Packs.\n---\n'},
        {'cell_type': 'code', 'metadata': {}, 'source': '#| echo: false\n#| output: asis\nshow_doc(f)', 'outputs': [
            {'output_type': 'execute_result', 'metadata': {}, 'data': {
                'text/markdown': '[source](https://x/y.py#L3){target="_blank" style="float:right"}\n\n### f\n\n'
                                 '```python\ndef f()\n```\n\n*Doc.*',
                'text/plain': 'def f()'}}]},
        {'cell_type': 'code', 'metadata': {}, 'source': '#| export\ndef f(): pass', 'outputs': [
            {'output_type': 'stream', 'name': 'stderr',
             'text': 'packing:   0%|          | 0/13 [00:00<?, ?it/s]packing: 100%|####| 13/13 [00:00<00:00]\n'},
            {'output_type': 'stream', 'name': 'stdout', 'text': 'wrote 13 packs\n'}]},
        {'cell_type': 'markdown', 'metadata': {}, 'source': '## The [`f`](https://h/b/x.html#f) function\ntext'}]}
    out = docs.tidy_nb(nb, lambda s: s)['cells']
    assert out[0]['source'] == '# Packing\n\n> Packs.'
    assert out[1]['metadata']['tags'] == ['hide-input'] and out[1]['source'] == 'show_doc(f)'
    html = out[1]['outputs'][0]['data']['text/html']
    assert 'y.py#L3' not in html and 'source' not in html  # no link to a repository that may not exist
    assert '<h3 id="f">f</h3>' in html and '<code class="language-python">def f()' in html and '```' not in html
    assert out[2]['source'] == 'def f(): pass'
    assert [o['text'] for o in out[2]['outputs']] == ['wrote 13 packs\n']  # no progress bar
    assert out[3]['source'] == '## The f function\ntext'
    nb = {'cells': [{'cell_type': 'markdown', 'source': '# Packing\n\n> Packs whole\n> examples.\n\nMore.'}]}
    assert docs.summary(nb) == 'Packs whole examples.'


def test_signatures_and_paths_as_a_reader_expects():
    "Classes render as classes, a None default without annotation as `=None`, and no build-machine path shows."
    md = '### DataError\n\n```python\n\ndef DataError(\n    args:VAR_POSITIONAL, kwargs:VAR_KEYWORD\n):\n```'
    assert 'class DataError(ValueError):' in docs.tidy_signature(md, 'alpaca_ft.data')
    md = '```python\n\ndef validate_row(\n    row, src:str=\'<rows>\', line:NoneType=None, row_idx:NoneType=None\n)'
    assert "line=None, row_idx=None" in docs.tidy_signature(md, 'alpaca_ft.data')
    assert 'NoneType' not in docs.tidy_signature(md, 'alpaca_ft.data')
    md = '```python\n\ndef TrainConfig(\n    data_dir:str, out:str\n)'
    assert docs.tidy_signature(md, 'alpaca_ft.train').startswith('```python\n\nclass TrainConfig(')
    assert docs.tidy_signature(md, None) == md  # no module: left as nbdev wrote it
    text = f'wrote {docs.NBS}/tmp/x.json and {docs.ROOT}/runs/a and {Path.home()}/.cache/b'
    assert docs.scrub_paths(text) == 'wrote tmp/x.json and runs/a and ~/.cache/b'
    assert docs.scrub_paths(f'Adding directory to artifact ({tempfile.gettempdir()}/tmpk3x_9/data)') == \
        'Adding directory to artifact ($TMP/data)'
    with mock.patch.dict(os.environ, {'ALPACA_FT_SHARED': '/data/where/shared/is'}):
        assert docs.scrub_paths("Path('/data/where/shared/is'), /data/where/shared/is/data/x.json, row 3") == \
            "Path('../shared'), ../shared/data/x.json, row 3"


def test_no_build_noise_and_warnings_found():
    "The build's `[INFO] Running in WANDB offline mode` print is dropped; a warning a page shows is found."
    warn = ('/x/.venv/lib/python3.11/site-packages/transformers/training_args.py:1541: FutureWarning: '
            '`gradient_checkpointing` is deprecated\n  warnings.warn(f"...", FutureWarning)\n')
    nb = {'cells': [
        {'cell_type': 'code', 'metadata': {}, 'source': 'import trl', 'outputs': [
            {'output_type': 'stream', 'name': 'stdout', 'text': '[INFO] Running in WANDB offline mode\n'}]},
        {'cell_type': 'code', 'metadata': {}, 'source': 'x = 1', 'outputs': [
            {'output_type': 'stream', 'name': 'stderr', 'text': warn}]}]}
    out = docs.tidy_nb(nb, lambda s: s)['cells']
    assert out[0]['outputs'] == []
    assert docs.shown_warnings({'cells': out}) == ['cell 1: FutureWarning: `gradient_checkpointing` is deprecated']
    assert docs.shown_warnings({'cells': out[:1]}) == []


def test_plots_get_their_alt_text():
    "A plotting cell's `#| fig-alt:` becomes its image's alt text (size kept); a cell without it is left alone."
    png = {'output_type': 'display_data', 'metadata': {'image/png': {'width': 689, 'height': 289}},
           'data': {'image/png': 'iVBORw0KGgo=\n', 'text/plain': '<Figure size 700x300 with 1 Axes>'}}
    nb = {'cells': [
        {'cell_type': 'code', 'metadata': {}, 'outputs': [json.loads(json.dumps(png))],
         'source': '#| fig-alt: "Histogram: most examples < 300 tokens, a few > 800 & <1000"\nlength_histogram(x)'},
        {'cell_type': 'code', 'metadata': {}, 'outputs': [json.loads(json.dumps(png))], 'source': 'plot(x)'}]}
    out = docs.tidy_nb(nb, lambda s: s)['cells']
    assert out[0]['source'] == 'length_histogram(x)'
    assert out[0]['outputs'][0]['data'] == {'text/html': '<img src="data:image/png;base64,iVBORw0KGgo=" alt="Histogram: '
                                            'most examples &lt; 300 tokens, a few &gt; 800 &amp; &lt;1000" '
                                            'width="689" height="289">'}
    assert out[1]['outputs'][0]['data'] == png['data']
    assert docs.fig_alt(['#| echo: false', '#| fig-alt: plain words']) == ['plain words']
    two = {'cell_type': 'code', 'metadata': {}, 'outputs': [json.loads(json.dumps(png)) for _ in range(2)],
           'source': '#| fig-alt: ["the schedule", "the loss"]\ndisplay(a, b)'}
    alts = [re.search(r'alt="([^"]*)"', o['data']['text/html']).group(1)
            for o in docs.tidy_nb({'cells': [two]}, lambda s: s)['cells'][0]['outputs']]
    assert alts == ['the schedule', 'the loss']
    assert docs.fig_alt(['#| echo: false']) is None


def test_code_fold():
    "`#| code-fold: true` folds a cell's code under its `code-summary` (output shown); nbdev's `show` does not."
    nb = {'cells': [
        {'cell_type': 'code', 'metadata': {}, 'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': '7\n'}],
         'source': '#| code-fold: true\n#| code-summary: "How it is measured"\ndef f(x):\n    return x < 2\nprint(7)'},
        {'cell_type': 'code', 'metadata': {}, 'outputs': [],
         'source': '#| code-fold: show\n#| code-summary: "Exported source"\ndef g(): pass'}]}
    out = docs.tidy_nb(nb, lambda s: s)['cells']
    assert [c['cell_type'] for c in out] == ['markdown', 'code', 'code']
    assert out[0]['source'] == ('<details class="code-fold"><summary>How it is measured</summary>\n\n```python\n'
                                'def f(x):\n    return x < 2\nprint(7)\n```\n\n</details>')
    assert out[1]['metadata']['tags'] == ['hide-input'] and out[1]['outputs'][0]['text'] == '7\n'
    assert 'tags' not in out[2]['metadata'] and out[2]['source'] == 'def g(): pass'
    assert docs.code_fold(['#| code-fold: true']) == 'Code'
    assert docs.code_fold(['#| code-fold: show', '#| code-fold: true']) == 'Code'  # nbdev's line, then ours
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    html = markdown2html_mistune(out[0]['source'])  # as mkdocs-jupyter renders a markdown cell
    assert html.index('<summary>') < html.index('<pre>') < html.index('</details>') and '&lt;' in html


def test_nav_sections():
    """The sidebar groups the pages: Part 1: the dataset (00-09), Part 2: fine-tuning (10-19), Reference (20-49 and
    the 90s, the glossary), Appendix: engineering (50-89), each in file-name order; every notebook is in it once."""
    names = ('index', '00_data', '08_prepare', '10_model', '14_x', '20_cli', '50_files', '52_attention', '90_g')
    nbs = [Path(f'nbs/{n}.ipynb') for n in names]
    assert docs.nav(nbs) == [{'Home': 'index.ipynb'}, {'Part 1: the dataset': ['00_data.ipynb', '08_prepare.ipynb']},
                             {'Part 2: fine-tuning': ['10_model.ipynb', '14_x.ipynb']},
                             {'Reference': ['20_cli.ipynb', '90_g.ipynb']},
                             {'Appendix: engineering': ['50_files.ipynb', '52_attention.ipynb']}]
    assert [t for t, _ in docs.SECTIONS] == ['Part 1: the dataset', 'Part 2: fine-tuning', 'Reference',
                                             'Appendix: engineering']
    every = [nb.name for nb in docs.site_order(NOTEBOOKS)]
    assert sorted(every) == sorted(nb.name for nb in NOTEBOOKS) and len(set(every)) == len(every), \
        'a notebook is missing from the sidebar, or in it twice'
    assert [n for n in every if n.startswith('5')] == sorted(nb.name for nb in NOTEBOOKS if nb.name.startswith('5'))


# ---------------------------------------------------------------- the built site

@pytest.fixture(scope='session')
def site():
    if os.environ.get('ALPACA_FT_DOCS_BUILT') != '1':
        # --allow-errors: a notebook that raises is reported by test_notebooks_run_cleanly; the rest is still checked
        r = subprocess.run(['bash', str(ROOT/'scripts'/'docs.sh'), '--allow-errors'], cwd=ROOT, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert (SITE/'index.html').is_file(), 'no site in _docs/: run bash scripts/docs.sh'
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    srv.handle_error = lambda *a: None  # a browser that drops a connection early is not an error
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


def _find(names, candidates):
    for n in names:
        p = shutil.which(n)
        if p: return p
    return next((c for c in candidates if Path(c).is_file()), None)


@pytest.fixture(scope='session')
def browser():
    chromium = os.environ.get('CHROMIUM') or _find(['chromium', 'chromium-browser'], ['/usr/bin/chromium'])
    driver_path = os.environ.get('CHROMEDRIVER') or _find(['chromedriver'], ['/usr/bin/chromedriver'])
    chromium, driver_path = (p if p and os.access(p, os.X_OK) else None for p in (chromium, driver_path))
    if not chromium or not driver_path:
        pytest.skip('headless Chromium not available: apt-get install chromium chromium-driver '
                    f'(chromium: {chromium}, chromedriver: {driver_path})')
    os.environ['SE_OFFLINE'] = 'true'  # Selenium Manager must never download a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1280,1000'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    try: drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    except Exception as e: pytest.skip(f'headless Chromium did not start: {type(e).__name__}: {str(e)[:200]}')
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _load(drv, url):
    "Open `url`, wait for every resource, return the browser's console messages of level SEVERE."
    drv.get_log('browser')  # drop what earlier pages logged
    drv.get(url)
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(drv, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    return [e for e in drv.get_log('browser') if e['level'] == 'SEVERE']


@pytest.fixture(scope='session')
def pages(site, browser):
    "Every notebook's page, opened once: {stem: {'url', 'errors', 'title', 'links', 'bad_images', 'ids'}}."
    out = {}
    for nb in NOTEBOOKS:
        url = site + page_path(nb)
        errors = _load(browser, url)
        out[nb.stem] = dict(
            url=url, errors=errors, title=browser.title,
            h1=browser.execute_script("const h = document.querySelector('article h1'); return h && h.textContent"),
            links=browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"),
            bad_images=browser.execute_script(
                "return Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 80))"),
            n_images=browser.execute_script("return document.images.length"),
            ids=set(browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)")),
            width=browser.execute_script("return window.innerWidth"),
            wide_code=browser.execute_script(_WIDE_CODE), code=browser.execute_script(_CODE_TEXT),
            h2=browser.execute_script(_H2_TEXT))
    return out


# code blocks (and inline code) wider than their box: they scroll sideways, and a reader misses the end of a line
_WIDE_CODE = """
    return Array.from(document.querySelectorAll('article pre, article code'))
        .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
        .map(e => `${e.tagName.toLowerCase()} ${e.scrollWidth}px in ${e.clientWidth}px: ` +
                  e.textContent.split('\\n').reduce((a, l) => l.length > a.length ? l : a, '').slice(0, 100));"""
_CODE_TEXT = "return Array.from(document.querySelectorAll('article pre')).map(e => e.textContent)"
_H2_TEXT = "return Array.from(document.querySelectorAll('article h2')).map(e => e.textContent.replace('¶', '').trim())"


def test_notebooks_run_cleanly(site):
    "Every notebook ran to its end when the site was built, and nbdev's processing took every one."
    bad = {}
    for nb in NOTEBOOKS:
        ex = json.loads((ROOT/'_build'/'exec'/nb.name).read_text())['metadata']['alpaca_ft_docs']
        if ex.get('error'): bad[nb.name] = ex['error'][-600:]
        if 'docs-error' in (ROOT/'_proc'/nb.name).read_text() and not ex.get('error'): bad[nb.name] = 'nbdev processing'
    assert not bad, '\n'.join(f'{k}: {v}' for k, v in bad.items())


def test_no_build_machine_paths_or_python_internals(site):
    "What the site shows has no absolute path of the machine that built it and no `NoneType=None`."
    bad = {}
    for f in sorted(SITE.rglob('*.html')):
        text = f.read_text(errors='replace')
        hits = [w for w in (str(ROOT), 'site-packages', 'NoneType=None', 'VAR_POSITIONAL') if w in text]
        if hits: bad[str(f.relative_to(SITE))] = hits
    assert not bad, bad


def test_no_python_warnings_shown(site):
    "No page shows a library's warning (a FutureWarning box with the build's venv path): each is fixed at its cause."
    bad = {nb.name: docs.shown_warnings(json.loads((ROOT/'_proc'/nb.name).read_text())) for nb in NOTEBOOKS}
    assert not any(bad.values()), {k: v for k, v in bad.items() if v}


def test_every_notebook_has_a_page(pages):
    for nb in NOTEBOOKS:
        p = pages[nb.stem]
        assert p['h1'], f'{nb.name}: no page title at {p["url"]}'
    # the site lists its pages in the notebooks' order
    nav = (SITE/'index.html').read_text()
    order = [nb for nb in docs.site_order(NOTEBOOKS) if nb.stem != 'index']
    pos = [nav.find(f'href="{nb.stem}/"') for nb in order]
    assert all(x > 0 for x in pos), dict(zip([n.stem for n in order], pos))
    assert pos == sorted(pos), 'navigation is not in sidebar order (Part 1, Part 2, Reference, Appendix)'
    labels = [t.strip() for t in re.findall(r'<label class="md-nav__link"[^>]*>\s*<span[^>]*>([^<]+)<', nav)]
    assert all(t in labels for t, *_ in docs.SECTIONS), f'sidebar sections missing: {labels}'


def test_no_javascript_errors(pages):
    bad = {k: [e['message'][:200] for e in p['errors']] for k, p in pages.items() if p['errors']}
    assert not bad, bad


def test_every_image_loads(pages):
    bad = {k: p['bad_images'] for k, p in pages.items() if p['bad_images']}
    assert not bad, bad
    assert sum(p['n_images'] for p in pages.values()) >= 3, 'the plots are missing'


def test_internal_links_resolve(site, pages):
    "Every link to this site reaches a page (HTTP 200) and, if it has a #fragment, an element with that id."
    ids = {urllib.parse.urlsplit(p['url']).path: p['ids'] for p in pages.values()}
    broken = []
    for k, p in pages.items():
        for href in set(p['links']):
            u = urllib.parse.urlsplit(href)
            if f'{u.scheme}://{u.netloc}' != site: continue
            try: urllib.request.urlopen(f'{site}{u.path}', timeout=10).close()
            except urllib.error.URLError as e:
                broken.append(f'{k}: {href} ({e})')
                continue
            if u.fragment and u.path in ids and urllib.parse.unquote(u.fragment) not in ids[u.path]:
                broken.append(f'{k}: {href} (no element with id {u.fragment!r})')
    assert not broken, '\n'.join(sorted(broken))


def _mask_spans(drv):
    return drv.execute_script("""
        const s = Array.from(document.querySelectorAll('article span[title]'));
        return s.map(e => getComputedStyle(e).backgroundColor);""")


def test_label_mask_page_shows_coloured_spans(site, browser):
    "02_tokenization teaches the prompt mask with the coloured view: grey masked tokens and green trained ones."
    stem = next(nb.stem for nb in NOTEBOOKS if nb.stem.endswith('_tokenization'))
    assert not _load(browser, f'{site}/{stem}/')
    colours = _mask_spans(browser)
    grey, green = colours.count('rgb(238, 238, 238)'), colours.count('rgb(183, 228, 183)')
    assert grey >= 5 and green >= 5, f'{grey} grey and {green} green token spans'
    shown = ''.join(browser.execute_script(
        "return Array.from(document.querySelectorAll('article span[title]')).map(e => e.textContent)"))
    assert 'café' in shown and 'Ã' not in shown, 'non-ASCII text is shown as byte-level stand-ins'
    first = browser.find_elements('css selector', 'article span[title]')[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)
    browser.save_screenshot(str(SITE/'screenshot-tokenization.png'))


def test_screenshots(site, browser):
    assert not _load(browser, site + '/')
    browser.save_screenshot(str(SITE/'screenshot-index.png'))
    stem = next(nb.stem for nb in NOTEBOOKS if nb.stem.endswith('_viz'))
    assert not _load(browser, f'{site}/{stem}/')
    img = browser.find_elements('css selector', 'article img')
    assert img, 'no plot on the viz page'
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", img[0])
    browser.save_screenshot(str(SITE/'screenshot-viz.png'))
    for f in ('screenshot-index.png', 'screenshot-viz.png'): assert (SITE/f).stat().st_size > 10_000


# ---------------------------------------------------------------- issue 13: the site as a student reads it

LESSONS = [nb for nb in NOTEBOOKS if re.match(r'\d+_', nb.stem) and int(nb.stem.split('_')[0]) < 20]


def _lines(code:str) -> list[str]:
    "The lines of `code` that show, each with its spaces collapsed (syntax highlighting may change spacing)."
    return [' '.join(l.split()) for l in code.splitlines() if l.strip() and not l.lstrip().startswith('#|')]


def exports_cells(nb:Path) -> list[str]:
    "The source of each `#| exports` cell of notebook `nb` (the code a lesson shows)."
    cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
    return [docs._text(c['source']) for c in cells if c['cell_type'] == 'code'
            and any(re.match(r'#\|\s*exports\s*$', l) for l in docs._text(c['source']).splitlines())]


def test_lessons_are_found():
    "The checks below look at the lesson pages (00-19); there are lessons, and the data lesson shows its code."
    assert len(LESSONS) >= 10, [nb.name for nb in LESSONS]
    data = next(nb for nb in LESSONS if nb.stem == '00_data')
    assert any('def load_rows(' in c for c in exports_cells(data))


def test_no_code_block_scrolls_sideways(pages):
    "Issue 13: at 1280 px no code block (nor inline code) is wider than its box, on any page."
    assert all(p['width'] >= 1260 for p in pages.values()), {k: p['width'] for k, p in pages.items()}
    bad = {k: p['wide_code'][:5] + ([f'... {len(p["wide_code"])} in all'] if len(p['wide_code']) > 5 else [])
           for k, p in pages.items() if p['wide_code']}
    assert not bad, '\n'.join(f'{k}:\n    ' + '\n    '.join(v) for k, v in sorted(bad.items()))


def test_each_lesson_shows_the_code_it_teaches(pages):
    """Issue 13: every `#| exports` cell of a lesson is on its page whole, not as a signature: some code block
    holds each of its lines, in order. A lesson that makes a module has at least one such cell."""
    bad = {}
    for nb in LESSONS:
        cells, shown = exports_cells(nb), [_lines(t) for t in pages[nb.stem]['code']]
        if docs._module(json.loads(nb.read_text(encoding='utf-8'))) and not cells:
            bad[nb.stem] = ['no #| exports cell: the page shows no function it teaches in full']
        for cell in cells:
            want = _lines(cell)
            def holds(block):  # each wanted line, in order
                it = iter(block)
                return all(any(l == b for b in it) for l in want)
            if not any(holds(b) for b in shown):
                first = next((l for l in want if l.startswith(('def ', 'class ', 'async def '))), want[0])
                bad.setdefault(nb.stem, []).append(f'not shown whole: {first[:90]}')
    assert not bad, '\n'.join(f'{k}: ' + '; '.join(v) for k, v in sorted(bad.items()))


def test_each_lesson_has_its_sections(pages):
    "Issue 13: each lesson page opens with 'What you will learn' and has 'Exercises' after it."
    bad = {}
    for nb in LESSONS:
        h2 = [h.lower() for h in pages[nb.stem]['h2']]
        missing = [s for s in ('what you will learn', 'exercises') if s not in h2]
        if not missing and h2.index('what you will learn') > h2.index('exercises'): missing = ['in that order']
        if missing: bad[nb.stem] = missing
    assert not bad, bad


def test_lesson_plots_have_alt_text(site):
    "Every plot on a lesson page has alt text: its cell says what it shows in a `#| fig-alt:` line."
    bad = {}
    for nb in LESSONS:
        cells = json.loads((ROOT/'_proc'/nb.name).read_text())['cells']
        n = sum('image/png' in o.get('data', {}) for c in cells for o in c.get('outputs', []))
        if n: bad[nb.stem] = f'{n} plot(s) without #| fig-alt'
    assert not bad, bad
