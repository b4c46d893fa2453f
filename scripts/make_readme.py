"""Write README.md from nbs/index.ipynb with nbconvert (nbdev_readme needs Quarto, which cannot be installed here).

Cells whose first line is `#| hide` are left out and nbdev's `#|` directive lines are dropped.
`--check` fails if README.md is not what index.ipynb gives."""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parents[1]

def readme() -> str:
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    cells = []
    for c in nb.cells:
        lines = c.source.splitlines()
        if any(l.strip().replace(' ', '') in ('#|hide', '#|include:false') for l in lines): continue
        c.source = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if c.source: cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter(exclude_output_prompt=True).from_notebook_node(nb)
    # a link to a page of the site (`90_glossary/#logits`) points at its notebook on the repository's page
    body = re.sub(r'\]\((\d+_[\w.-]+)/(#[\w.-]*)?\)', r'](nbs/\1.ipynb)', body)
    return body.strip() + '\n'

if __name__ == '__main__':
    text, path = readme(), root/'README.md'
    if '--check' in sys.argv:
        if path.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run python scripts/make_readme.py')
        print('README.md matches nbs/index.ipynb')
    else:
        path.write_text(text, encoding='utf-8'); print(f'wrote {path}')
