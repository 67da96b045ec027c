"""``wmsim play``: a model's dream played in the browser, over aiohttp (the ``play`` extra).

:mod:`wmsim.play.app` serves the page and :mod:`wmsim.play.connection` plays
one dream per WebSocket; :mod:`wmsim.play.session` holds a game's envs and
what was played, :mod:`wmsim.play.protocol` checks the page's messages and
:mod:`wmsim.play.keys` maps held keys to a game's actions. The page itself is
``static/``: plain HTML, JS and CSS, nothing fetched from elsewhere.
"""
