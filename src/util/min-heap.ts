/**
 * A binary min-heap: the scheduler's "not yet due" set, ordered by next attempt time. Stable: items
 * that tie come out in the order they went in, so a burst queued within one millisecond is sent in
 * the order it was accepted (a plain heap hands ties out in an arbitrary order).
 */
/** An item with the order it was pushed in: the tie-breaker. */
interface HeapNode<T> {
  item: T;
  order: number;
}

export class MinHeap<T> {
  private readonly nodes: HeapNode<T>[] = [];
  private pushed = 0;

  constructor(private readonly less: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.nodes.length;
  }

  peek(): T | undefined {
    return this.nodes[0]?.item;
  }

  push(item: T): void {
    this.insert({ item, order: this.pushed++ });
  }

  pop(): T | undefined {
    const nodes = this.nodes;
    const top = nodes[0];
    const last = nodes.pop();
    if (nodes.length > 0 && last !== undefined) {
      nodes[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let smallest = i;
        if (l < nodes.length && this.before(l, smallest)) smallest = l;
        if (r < nodes.length && this.before(r, smallest)) smallest = r;
        if (smallest === i) break;
        this.swap(i, smallest);
        i = smallest;
      }
    }
    return top?.item;
  }

  /** Removes every item matching the predicate (O(n)); used for operator commands, not the hot path. */
  removeWhere(predicate: (item: T) => boolean): T[] {
    const removed: T[] = [];
    const kept: HeapNode<T>[] = [];
    for (const node of this.nodes.splice(0)) {
      if (predicate(node.item)) removed.push(node.item);
      else kept.push(node);
    }
    for (const node of kept) this.insert(node); // keeps each item's place among ties
    return removed;
  }

  private insert(node: HeapNode<T>): void {
    const nodes = this.nodes;
    nodes.push(node);
    let i = nodes.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private before(i: number, j: number): boolean {
    const a = this.nodes[i] as HeapNode<T>;
    const b = this.nodes[j] as HeapNode<T>;
    if (this.less(a.item, b.item)) return true;
    if (this.less(b.item, a.item)) return false;
    return a.order < b.order;
  }

  private swap(i: number, j: number): void {
    const nodes = this.nodes;
    [nodes[i], nodes[j]] = [nodes[j] as HeapNode<T>, nodes[i] as HeapNode<T>];
  }
}
