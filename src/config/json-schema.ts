/** The JSON Schema of the YAML config, generated from the zod schema (editors validate and complete with it). */
import { z } from 'zod';
import { configSchema } from './schema.js';

export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }),
    title: 'smtp-graph-relay configuration',
    description: 'Generated from src/config/schema.ts by `npm run schema`; do not edit by hand.',
  };
}
