# Distributed tests need epmd before the VM starts distribution.
{_, 0} = System.cmd("epmd", ["-daemon"])
# The C node's stderr is logged at debug level; keep test output readable.
Logger.configure(level: :info)
ExUnit.start()
