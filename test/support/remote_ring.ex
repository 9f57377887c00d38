defmodule Synod.Test.RemoteRing do
  @moduledoc false
  # Functions the ring cluster tests run on peers through :erpc.

  @spec placement([Synod.Ring.member()], [binary()], non_neg_integer(), keyword()) ::
          {list(), list()}
  def placement(members, keys, sample, opts \\ []) do
    ring = Synod.Ring.new(members, opts)

    {Synod.Ring.lookup_many(ring, keys),
     Enum.map(Enum.take(keys, sample), &Synod.Ring.owners(ring, &1, 3))}
  end

  @spec info([Synod.Ring.member()], keyword()) :: map()
  def info(members, opts), do: Synod.Ring.info(Synod.Ring.new(members, opts))
end
