defmodule Synod.ProperStoreTest do
  # PropEr's stateful model of Synod.Store (test/support/proper/store_model.ex)
  # against a real 3-member store on real peers: sequential command
  # sequences, and parallel ones whose answers must fit some sequential order.
  use ExUnit.Case, async: false

  alias Synod.Proper.StoreModel
  alias Synod.Test.Cluster

  @moduletag :distributed
  @moduletag timeout: 300_000

  setup_all do
    dir = Path.join(System.tmp_dir!(), "synod_proper_#{System.unique_integer([:positive])}")
    cluster = Cluster.start(3, data_root: dir, prefix: "proper", store: :proper_store)

    on_exit(fn ->
      Cluster.stop(cluster)
      File.rm_rf!(dir)
    end)

    %{cluster: cluster}
  end

  defp quickcheck(prop, n),
    do: :proper.quickcheck(prop, [{:numtests, n}, :quiet])

  test "sequential commands answer what the model says", %{cluster: c} do
    assert quickcheck(StoreModel.prop_sequential(c.store, c.nodes), 60) == true
  end

  test "parallel commands answer as some order of the model", %{cluster: c} do
    assert quickcheck(StoreModel.prop_parallel(c.store, c.nodes), 15) == true
  end
end
