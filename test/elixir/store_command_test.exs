defmodule Synod.Store.CommandTest do
  use ExUnit.Case, async: true

  alias Synod.Store.Command

  doctest Synod.Store.Command

  # Encodings fixed by docs/store.md (the C tests check the same bytes from C).
  test "commands encode to the documented bytes" do
    assert Command.put("k", "v", lease: 300, prev_kv: true) ==
             <<1, 1, 1, 1, "k", 1, "v", 0xAC, 0x02>>

    assert Command.delete("a", range_end: "b") == <<1, 2, 0, 1, "a", 1, "b">>
    assert Command.delete("a", range_end: :end, prev_kv: true) == <<1, 2, 1, 1, "a", 1, 0>>

    assert Command.range("p/", prefix: true, limit: 10, keys_only: true) ==
             <<1, 3, 2, 2, "p/", 2, "p0", 10>>

    assert Command.range("a", count_only: true) == <<1, 3, 4, 1, "a", 0, 0>>
    assert Command.lease_grant(0, 5000) == <<1, 5, 0, 0x88, 0x27>>
    assert Command.lease_revoke(7) == <<1, 6, 7>>
    assert Command.compact(128) == <<1, 7, 0x80, 0x01>>

    assert Command.txn(
             [
               {:exists, "a"},
               {:absent, "b"},
               {:mod_revision, "a", :<, 5},
               {:value, "a", :!=, "x"}
             ],
             [{:put, "a", "1"}],
             [{:delete, "a"}, {:range, "a", limit: 1}]
           ) ==
             IO.iodata_to_binary([
               [1, 4, 4],
               [0, 0, 1, "a"],
               [0, 3, 1, "b"],
               [3, 2, 1, "a", 5],
               [4, 3, 1, "a", 1, "x"],
               [1, 1, 0, 1, "a", 1, "1", 0],
               [2, 2, 0, 1, "a", 0, 3, 0, 1, "a", 0, 1]
             ])
  end

  test "a count compare and a delete of the first key encode to the documented bytes" do
    assert Command.delete("q/", prefix: true, first: true, prev_kv: true) ==
             <<1, 2, 9, 2, "q/", 2, "q0">>

    assert Command.txn([{:count, "c/", [prefix: true], :==, 0}, {:count, "k", [], :>, 3}], []) ==
             IO.iodata_to_binary(
               [[1, 4, 2], [6, 0, 2, "c/", 2, "c0", 0], [6, 1, 1, "k", 0, 3]] ++
                 [0, 0]
             )

    assert_raise ArgumentError, ~r/unknown option :limit/, fn ->
      Command.txn([{:count, "c/", [limit: 1], :==, 0}], [])
    end

    assert_raise ArgumentError, ~r/count must be an integer/, fn ->
      Command.txn([{:count, "c/", [prefix: true], :==, -1}], [])
    end

    assert_raise ArgumentError, ~r/first must be a boolean/, fn ->
      Command.delete("q/", first: :yes)
    end
  end

  # The list-based prefix_end/1 it replaced (the last byte below 255
  # incremented, trailing 255s dropped; <<0>> when all bytes are 255).
  defp reference_prefix_end(prefix) do
    case prefix |> :binary.bin_to_list() |> Enum.reverse() |> Enum.drop_while(&(&1 == 255)) do
      [] -> <<0>>
      [last | rest] -> IO.iodata_to_binary(Enum.reverse([last + 1 | rest]))
    end
  end

  test "prefix_end/1 agrees with the list-based definition, trailing 255s included" do
    :rand.seed(:exsss, {7, 11, 13})

    cases =
      ["", <<255>>, <<255, 255>>, <<0>>, <<254>>, <<1, 255>>, <<1, 254, 255, 255>>, "a/"] ++
        for _ <- 1..2_000 do
          body = :crypto.strong_rand_bytes(:rand.uniform(6) - 1)
          body <> :binary.copy(<<255>>, :rand.uniform(4) - 1)
        end

    for prefix <- cases,
        do: assert(Command.prefix_end(prefix) == reference_prefix_end(prefix), inspect(prefix))
  end

  test "a compare's revision is checked with its target named; a bad option list is refused" do
    assert_raise ArgumentError, ~r/create_revision must be an integer in 0/, fn ->
      Command.txn([{:create_revision, "k", :==, -1}], [])
    end

    assert_raise ArgumentError, ~r/mod_revision must be an integer in 0/, fn ->
      Command.txn([{:mod_revision, "k", :==, :x}], [])
    end

    assert_raise ArgumentError, ~r/options must be a keyword list/, fn ->
      Command.range("k", [:prefix])
    end

    assert_raise ArgumentError, ~r/options must be a keyword list/, fn ->
      Command.range("k", [{:nope, 1}, :prefix])
    end

    assert_raise ArgumentError, ~r/unknown option :nope/, fn ->
      Command.range("k", prefix: true, nope: 1)
    end
  end

  test "bad arguments raise ArgumentError naming the problem" do
    assert_raise ArgumentError, ~r/a key must be a binary of 1..4096 bytes/, fn ->
      Command.put("", "v")
    end

    assert_raise ArgumentError, ~r/a key must be/, fn ->
      Command.put(String.duplicate("k", 4097), "v")
    end

    assert_raise ArgumentError, ~r/a value must be a binary of at most 1 MiB/, fn ->
      Command.put("k", :binary.copy("v", 1_048_577))
    end

    assert_raise ArgumentError, ~r/unknown option :ttl/, fn -> Command.put("k", "v", ttl: 1) end

    assert_raise ArgumentError, ~r/lease must be an integer/, fn ->
      Command.put("k", "v", lease: -1)
    end

    assert_raise ArgumentError, ~r/prev_kv must be a boolean/, fn ->
      Command.put("k", "v", prev_kv: 1)
    end

    assert_raise ArgumentError, ~r/either range_end/, fn ->
      Command.delete("a", prefix: true, range_end: "b")
    end

    assert_raise ArgumentError, ~r/ttl_ms must be/, fn -> Command.lease_grant(0, 0) end

    assert_raise ArgumentError, ~r/lease id must be an integer in 1/, fn ->
      Command.lease_revoke(0)
    end

    assert_raise ArgumentError, ~r/revision must be/, fn -> Command.compact(0) end

    assert_raise ArgumentError, ~r/not a txn compare/, fn ->
      Command.txn([{:version, "a", 1}], [])
    end

    assert_raise ArgumentError, ~r/compare operator/, fn ->
      Command.txn([{:version, "a", :>=, 1}], [])
    end

    assert_raise ArgumentError, ~r/a txn op is/, fn -> Command.txn([], [{:get, "a"}]) end

    assert_raise ArgumentError, ~r/success ops must be a list of at most 128/, fn ->
      Command.txn([], for(i <- 1..129, do: {:put, "k#{i}", "v"}))
    end
  end
end
