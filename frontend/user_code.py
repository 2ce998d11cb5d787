"""Where the user's code is: the first stack frame outside ember, which the tracer names as the
source of each op it records (`user_location`) and of each guard (`user_frame`, with the line's
text), in IR dumps, compile reports and errors (frontend/tracer.py)."""
import linecache
import os
import sys

_PACKAGE_DIRS = tuple(os.path.dirname(os.path.abspath(p)) + os.sep for p in (
    sys.modules["ember"].__file__, __file__))


def not_user_code(path):
    """Frames from `path` (a file or folder) are ember's too: the `ember` command's own script,
    whose training step is ember's code, not the user's."""
    global _PACKAGE_DIRS
    _PACKAGE_DIRS = _PACKAGE_DIRS + (os.path.abspath(path),)
    _IS_OURS.clear()


_IS_OURS = {}  # code object -> is it ember's (or frozen) code: asked for every op a trace records
_BASENAMES = {}  # file name -> its base name


def _first_user_frame(frame):
    """`frame` or the first frame below it on the stack that is not ember's, or None."""
    ours = _IS_OURS
    while frame is not None:
        code = frame.f_code
        mine = ours.get(code)
        if mine is None:
            mine = ours[code] = code.co_filename.startswith(_PACKAGE_DIRS + ("<frozen",))
        if not mine:
            return frame
        frame = frame.f_back
    return None


def _location(frame):
    filename = frame.f_code.co_filename
    base = _BASENAMES.get(filename)
    if base is None:
        base = _BASENAMES[filename] = os.path.basename(filename)
    return f"{base}:{frame.f_lineno}"


def user_location():
    """`file.py:line` of the first stack frame outside ember: the model line an op came from."""
    frame = _first_user_frame(sys._getframe(2))
    return "" if frame is None else _location(frame)


def user_frame():
    """(`file.py:line`, the line's text) of the first stack frame outside ember: where the user's
    code turned a tensor into Python."""
    frame = _first_user_frame(sys._getframe(2))
    if frame is None:
        return "", ""
    return _location(frame), linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
