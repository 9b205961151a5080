import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { configJsonSchema } from '../../src/config/json-schema.js';

const root = path.resolve(__dirname, '../..');

describe('shipped configuration files', () => {
  it('relay.example.yaml is valid against the schema', () => {
    const text = readFileSync(path.join(root, 'relay.example.yaml'), 'utf8');
    const config = parseConfigText(text, { GRAPH_CLIENT_SECRET: 'x' }, 'relay.example.yaml');
    expect(config.graph.mailbox).toBe('relay@contoso.example');
  });

  it('relay.example.yaml mentions every configuration key', () => {
    const text = readFileSync(path.join(root, 'relay.example.yaml'), 'utf8');
    const keys = new Set<string>();
    const walk = (schema: Record<string, unknown>) => {
      for (const [key, value] of Object.entries((schema.properties ?? {}) as Record<string, Record<string, unknown>>)) {
        keys.add(key);
        walk(value);
      }
      for (const option of (schema.oneOf ?? schema.anyOf ?? []) as Record<string, unknown>[]) walk(option);
    };
    walk(configJsonSchema());
    const missing = [...keys].filter((key) => !new RegExp(`^\\s*#?\\s*${key}:`, 'm').test(text));
    expect(missing).toEqual([]);
  });

  it('config.schema.json is up to date (npm run schema)', () => {
    const committed = JSON.parse(readFileSync(path.join(root, 'config.schema.json'), 'utf8'));
    expect(committed).toEqual(configJsonSchema());
  });
});
