defmodule Synod.TestCluster do
  @moduledoc false
  # Real distributed Erlang for tests, through Synod.LocalCluster: the test VM
  # becomes a long-named node on 127.0.0.1 (test_helper.exs starts epmd) and
  # starts :peer nodes with its code path and cookie. Closures sent to a peer
  # must come from compiled modules (lib/ or test/support/), never from a test
  # file: .exs modules exist only in the test VM.

  defdelegate ensure_distributed(), to: Synod.LocalCluster

  @spec start_peers(pos_integer(), keyword()) :: [{pid(), node()}]
  def start_peers(count, opts \\ []), do: Synod.LocalCluster.start(count, opts)

  @spec stop_peers([{pid(), node()}]) :: :ok
  def stop_peers(peers), do: Synod.LocalCluster.stop(peers)
end
