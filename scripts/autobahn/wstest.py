# Python 2.7: runs in the Autobahn venv.
#
#   python wstest.py --list-cases SPEC.json   the case ids a spec selects, in run order
#   python wstest.py WSTEST-ARGS...           wstest, with listening sockets on 127.0.0.1
#                                             (stock wstest listens on every interface)
import json
import sys


def list_cases(path):
    from autobahntestsuite.case import (CaseBasename, CaseCategories, Cases,
                                        CaseSetname, CaseSubCategories)
    from autobahntestsuite.caseset import CaseSet
    with open(path) as f:
        spec = json.load(f)
    cases = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
    for case in cases.parseSpecCases(spec):
        if case not in cases.CasesById:
            sys.stderr.write("unknown case %r\n" % case)
            sys.exit(2)
        print(case)


def run(argv):
    import autobahntestsuite  # noqa: F401  (installs the reactor first)
    from autobahntestsuite import fuzzing
    listen = fuzzing.listenWS

    def on_loopback(factory, contextFactory=None, backlog=50, interface=''):
        return listen(factory, contextFactory, backlog, interface or '127.0.0.1')

    fuzzing.listenWS = on_loopback
    from autobahntestsuite import wstest
    sys.argv = ["wstest"] + argv
    wstest.run()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--list-cases":
        list_cases(sys.argv[2])
    else:
        run(sys.argv[1:])
