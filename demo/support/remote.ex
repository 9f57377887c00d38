defmodule Synod.Demo.Remote do
  @moduledoc false
  # Functions demo/cluster.exs runs on its peers. They live in a compiled
  # module because a module defined in an .exs script exists only in the VM
  # that ran the script.

  @doc "The owner of each key, computed on this node from `members`."
  @spec placement([Synod.Ring.member()], [Synod.Ring.key()]) :: [Synod.Ring.member()]
  def placement(members, keys), do: Synod.Ring.lookup_many(Synod.Ring.new(members), keys)
end
