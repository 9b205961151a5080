import { describe, expect, it } from 'vitest';
import { MinHeap } from '../../src/util/min-heap.js';

describe('MinHeap', () => {
  const byDue = () => new MinHeap<{ due: number; name: string }>((a, b) => a.due < b.due);
  const drain = (heap: ReturnType<typeof byDue>): string[] => {
    const out: string[] = [];
    for (let next = heap.pop(); next; next = heap.pop()) out.push(next.name);
    return out;
  };

  it('hands out the earliest first and ties in the order they were pushed', () => {
    const heap = byDue();
    const names = Array.from({ length: 40 }, (_, i) => `m${i}`);
    // Forty messages due in the same millisecond, then one due earlier and one later.
    for (const name of names) heap.push({ due: 5, name });
    heap.push({ due: 9, name: 'late' });
    heap.push({ due: 1, name: 'early' });
    expect(heap.size).toBe(42);
    expect(drain(heap)).toEqual(['early', ...names, 'late']);
    expect(heap.size).toBe(0);
    expect(heap.peek()).toBeUndefined();
  });

  it('keeps the order among ties after items are removed', () => {
    const heap = byDue();
    for (let i = 0; i < 20; i++) heap.push({ due: i % 2, name: `m${i}` });
    const removed = heap.removeWhere((e) => e.name === 'm4' || e.name === 'm7');
    expect(removed.map((e) => e.name).sort()).toEqual(['m4', 'm7']);
    heap.push({ due: 0, name: 'new' });
    const evens = Array.from({ length: 10 }, (_, i) => `m${i * 2}`).filter((n) => n !== 'm4');
    const odds = Array.from({ length: 10 }, (_, i) => `m${i * 2 + 1}`).filter((n) => n !== 'm7');
    expect(drain(heap)).toEqual([...evens, 'new', ...odds]);
  });
});
