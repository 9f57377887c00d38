defmodule Synod.RaftSafeDecodeTest do
  # Raft entries and snapshot data are decoded with bounded atom creation
  # (Synod.Raft.SafeTerm; docs/reliability.md, "Safe decoding"): the
  # scanner lists a term's atoms exactly and never creates one; a crafted
  # log entry or snapshot naming atoms that do not exist is applied while
  # the node's budget allows, and past it the member stops by name and the
  # atoms still do not exist.
  use ExUnit.Case, async: false

  import Bitwise
  alias Synod.Raft
  alias Synod.Raft.{SafeTerm, Storage}
  alias Synod.Test.Wait

  @placeholder :synod_safe_decode_placeholder_atom_000

  setup_all do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  setup do
    dir = Path.join(System.tmp_dir!(), "synod-safe-decode-#{System.unique_integer([:positive])}")
    budget = Application.get_env(:synod, :raft_atom_budget)

    on_exit(fn ->
      File.rm_rf(dir)

      if budget,
        do: Application.put_env(:synod, :raft_atom_budget, budget),
        else: Application.delete_env(:synod, :raft_atom_budget)
    end)

    {:ok, dir: dir, group: :"sd#{System.unique_integer([:positive])}"}
  end

  # A name of the placeholder's length that is no atom (yet).
  defp fresh_name do
    base = "synod_new_#{System.unique_integer([:positive])}_"
    len = byte_size(Atom.to_string(@placeholder))
    name = base <> String.duplicate("x", len - byte_size(base))
    refute exists?(name)
    name
  end

  defp exists?(name) do
    _ = String.to_existing_atom(name)
    true
  rescue
    ArgumentError -> false
  end

  # term_to_binary(term) with the placeholder atom renamed `name`: the bytes
  # another node (or a crafted file) could hold.
  defp crafted(term, name) do
    bin = :erlang.term_to_binary(term)
    placeholder = Atom.to_string(@placeholder)
    assert :binary.matches(bin, placeholder) != []
    :binary.replace(bin, placeholder, name, [:global])
  end

  defp atoms_of(term) when is_atom(term), do: [term]
  defp atoms_of(term) when is_tuple(term), do: term |> Tuple.to_list() |> atoms_of()
  defp atoms_of([h | t]), do: atoms_of(h) ++ atoms_of(t)
  defp atoms_of(m) when is_map(m), do: m |> Map.to_list() |> atoms_of()
  defp atoms_of(p) when is_pid(p) or is_reference(p) or is_port(p), do: [node(p)]

  defp atoms_of(f) when is_function(f) do
    info = Function.info(f)

    case info[:type] do
      :external -> [info[:module], info[:name]]
      :local -> [info[:module], node(info[:pid])] ++ atoms_of(info[:env])
    end
  end

  defp atoms_of(_), do: []

  describe "the scanner" do
    test "lists exactly the atoms of terms of every kind" do
      port = hd(Port.list())
      fun = fn x -> {x, self()} end

      terms = [
        :a,
        [],
        {},
        %{},
        "bin",
        <<1::3>>,
        1,
        -1,
        300,
        1 <<< 70,
        -(1 <<< 700),
        1.5,
        ~c"chars",
        [1, :b | :c],
        {:x, [y: 1, z: "2"], %{1 => [:w], k: :v}},
        self(),
        make_ref(),
        port,
        &Enum.map/2,
        fun,
        {:ümlaut, :"with space"},
        List.duplicate({:deep, [:er]}, 100),
        Enum.reduce(1..2_000, :leaf, &{&1, &2})
      ]

      for term <- terms do
        {:ok, names} = SafeTerm.atoms(:erlang.term_to_binary(term))

        got =
          names |> Enum.map(fn {e, n} -> :erlang.binary_to_existing_atom(n, e) end) |> Enum.sort()

        assert got == term |> atoms_of() |> Enum.uniq() |> Enum.sort(), inspect(term)
      end
    end

    test "refuses malformed input at once and never raises" do
      good = :erlang.term_to_binary({:a, [1, 2, "three"], %{b: 4}})

      for cut <- 0..(byte_size(good) - 1) do
        assert {:error, :bad_term} = SafeTerm.atoms(binary_part(good, 0, cut))
      end

      # arities far beyond the bytes present
      assert {:error, :bad_term} = SafeTerm.atoms(<<131, 105, 0xFFFFFFFF::32, 106>>)
      assert {:error, :bad_term} = SafeTerm.atoms(<<131, 108, 0xFFFFFFFF::32, 106>>)
      assert {:error, :bad_term} = SafeTerm.atoms(<<131, 116, 0xFFFFFFFF::32>>)
      # trailing bytes, unknown tags, an atom cache reference, compressed
      assert {:error, :bad_term} = SafeTerm.atoms(good <> <<0>>)
      assert {:error, :bad_term} = SafeTerm.atoms(<<131, 200>>)
      assert {:error, :bad_term} = SafeTerm.atoms(<<131, 82, 0>>)

      assert {:error, :bad_term} =
               SafeTerm.atoms(:erlang.term_to_binary(List.duplicate(:a, 1000), [:compressed]))

      for _ <- 1..2_000 do
        junk = <<131>> <> :crypto.strong_rand_bytes(:rand.uniform(40))

        assert match?({:ok, _}, SafeTerm.atoms(junk)) or
                 SafeTerm.atoms(junk) == {:error, :bad_term}

        assert match?({:ok, _}, SafeTerm.decode(junk)) or
                 match?({:error, _}, SafeTerm.decode(junk))
      end
    end

    test "decode: known atoms at once, new ones within the budget, none past it" do
      assert {:ok, {:ok, [1]}} = SafeTerm.decode(:erlang.term_to_binary({:ok, [1]}))

      one = fresh_name()
      Application.put_env(:synod, :raft_atom_budget, SafeTerm.created() + 1)
      assert {:ok, {:put, atom, 1}} = SafeTerm.decode(crafted({:put, @placeholder, 1}, one))
      assert Atom.to_string(atom) == one

      [two, three] = [fresh_name(), fresh_name()]
      bin = crafted({@placeholder, @placeholder}, two)
      bin = :binary.replace(bin, two, three, [])
      assert {:error, {:atom_budget, 2, 0}} = SafeTerm.decode(bin)
      refute exists?(two) or exists?(three)
    end
  end

  describe "a member" do
    defp start(group, dir, opts \\ []) do
      Raft.start_member(
        [name: group, voters: [node()], data_dir: dir, machine: Synod.Raft.KV] ++ opts
      )
    end

    # A group with one put, stopped; then `fun.(storage, recovered)` changes its files.
    defp prepare(group, dir, fun) do
      {:ok, _} = start(group, dir)
      Wait.until(fn -> Synod.leader?(group) end)
      {:ok, nil} = Raft.command(group, {:put, :before, 1})
      :ok = Raft.stop_member(group)
      {:ok, storage, recovered} = Storage.open(dir)
      storage = fun.(storage, recovered)
      Storage.close(storage)
    end

    defp last(recovered) do
      case List.last(recovered.entries) do
        nil -> {recovered.snapshot.index, recovered.snapshot.term}
        e -> {e.index, e.term}
      end
    end

    defp append_entry(data) do
      fn storage, recovered ->
        {index, _} = last(recovered)
        term = recovered.hard_state.term
        hs = %{recovered.hard_state | commit: index + 1}
        entry = %{index: index + 1, term: term, type: 0, data: data}
        {:ok, storage} = storage |> Storage.write([entry], hs) |> Storage.sync()
        storage
      end
    end

    defp put_snapshot(data) do
      fn storage, recovered ->
        {index, term} = last(recovered)
        meta = :erlang.term_to_binary({[Raft.member_id(node())], []})
        snap = %{index: index, term: term, meta: meta, data: data}
        hs = %{recovered.hard_state | commit: index}
        {:ok, storage} = Storage.install_snapshot(storage, snap, hs, [])
        storage
      end
    end

    test "a log entry naming a new atom: applied within the budget", %{group: g, dir: dir} do
      name = fresh_name()
      prepare(g, dir, append_entry(crafted({:c, {:put, @placeholder, 7}, make_ref()}, name)))
      Application.put_env(:synod, :raft_atom_budget, SafeTerm.created() + 1)
      {:ok, _} = start(g, dir)
      Wait.until(fn -> Synod.leader?(g) end)
      assert exists?(name)
      assert {:ok, 7} = Raft.query(g, {Map, :get, [String.to_existing_atom(name)]})
      assert {:ok, 1} = Raft.query(g, {Map, :get, [:before]})
      :ok = Raft.stop_member(g)
    end

    test "a log entry naming a new atom past the budget: the member stops, no atom is made",
         %{group: g, dir: dir} do
      name = fresh_name()
      prepare(g, dir, append_entry(crafted({:c, {:put, @placeholder, 7}, make_ref()}, name)))
      Application.put_env(:synod, :raft_atom_budget, SafeTerm.created())

      {result, log} = ExUnit.CaptureLog.with_log(fn -> start(g, dir) end)
      assert {:error, reason} = result
      assert inspect(reason) =~ "unsafe_term"
      assert inspect(reason) =~ "atom_budget"
      assert log =~ "not decoded"
      refute exists?(name)
    end

    test "a snapshot naming a new atom: restored within the budget, refused past it",
         %{group: g, dir: dir} do
      name = fresh_name()
      sessions = {%{}, :queue.new()}
      # The member's snapshot format (Synod.Raft.Member.encode_snapshot/1):
      # a head with the member map and sessions, then the machine's state in
      # term_to_binary form (kind 0), here naming the new atom.
      head = :erlang.term_to_binary({%{}, sessions})
      machine = crafted(%{@placeholder => :kept, before: 1}, name)
      data = <<1, byte_size(head)::32, head::binary, 0, machine::binary>>
      prepare(g, dir, put_snapshot(data))

      Application.put_env(:synod, :raft_atom_budget, SafeTerm.created())
      {result, _log} = ExUnit.CaptureLog.with_log(fn -> start(g, dir) end)
      assert {:error, reason} = result
      assert inspect(reason) =~ "unsafe_term"
      refute exists?(name)

      Application.put_env(:synod, :raft_atom_budget, SafeTerm.created() + 1)
      {:ok, _} = start(g, dir)
      Wait.until(fn -> Synod.leader?(g) end)
      assert {:ok, :kept} = Raft.query(g, {Map, :get, [String.to_existing_atom(name)]})
      :ok = Raft.stop_member(g)
    end
  end
end
