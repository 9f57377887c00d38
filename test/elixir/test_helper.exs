# Distributed tests need epmd before the VM starts distribution.
{_, 0} = System.cmd("epmd", ["-daemon"])
ExUnit.start()
