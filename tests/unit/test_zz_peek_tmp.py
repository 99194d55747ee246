from test_classic_cloud import *  # noqa
def test_peek(cloud, capsys):
    print(run(["-annex-name", "fail1", "-count", "2", "-yes", "-aws-on-demand-security-group-ids", MISSING_SG], capsys))
    main(["-annex-name", "a1", "-count", "2", "-yes"]); capsys.readouterr()
    print(run(["-status"], capsys)); print(run(["-annex-name","a1","status"], capsys))
