"""Boot file of a luminaire node: copy it to the board's root as ``main.py``.

Kept to one call so that everything else is installed and updated with ``mip``
(edge/node/package.json) and compiled and tested off the board.
"""

import edge.node.board

edge.node.board.run()
