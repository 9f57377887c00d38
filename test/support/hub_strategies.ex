defmodule Synod.Test.HubStartFirst do
  @moduledoc false
  # An application's migration strategy (tests): start the new copy first,
  # stop the old one when it runs, no handover.
  @behaviour Synod.Hub.MigrationStrategy

  @impl true
  def plan(_ids, _target), do: :start_then_stop
end

defmodule Synod.Test.HubLastActive do
  @moduledoc false
  # An application's replication model (tests): the last owner's copy is
  # the active one.
  @behaviour Synod.Hub.ReplicationModel

  @impl true
  def mode(owners, node), do: if(List.last(owners) == node, do: :active, else: :passive)
end

defmodule Synod.Test.HubNeverAlone do
  @moduledoc false
  # An application's partition strategy (tests): partitioned while alone.
  @behaviour Synod.Hub.PartitionStrategy

  @impl true
  def partitioned?(seen, _known), do: length(seen) < 2
end
