"""Posts: Markdown with live results, rendered into a page or a site of pages that share their assets.

A post is ordinary Markdown (CommonMark, tables, ``$math$``) plus fenced blocks that name a result::

    ```mechwork
    attention: induction-2l
    tokens: repeated 24
    ```

The first key of a block names the result and its value the model (a preset, a run directory or a model
directory, relative to the post); the other keys are that result's arguments. :mod:`mechwork.post.parse`
reads and checks every block before anything is computed (a bad block is one line naming the file, the
line and what is valid); :mod:`mechwork.post.blocks` computes each result and renders it into page blocks;
:mod:`mechwork.post.cache` keeps those blocks by the model's weights hash and the block's arguments, so a
prose edit re-renders in seconds; :mod:`mechwork.post.build` writes one page (assets inline) or a site
(one shared ``assets/`` folder, relative links, an index page).

Example::

    >>> from mechwork.post.parse import parse_text
    >>> post = parse_text("# Induction\\n\\n```mechwork\\nhead-detectors: induction-2l\\n```\\n", "demo.md")
    >>> post.title, [b.kind for b in post.blocks]
    ('Induction', ['head-detectors'])
"""
