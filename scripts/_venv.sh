# Sourced by the scripts here: make .venv (once), activate it and install the
# package with the extras given as arguments, e.g. `. scripts/_venv.sh all,test`.
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[$1]"
